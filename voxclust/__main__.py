"""``python -m voxclust``: the same command line as ``voxclust``."""

from voxclust.cli import main

main()
