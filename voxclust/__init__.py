"""The voxclust command line (typer) and the local stack behind ``voxclust stack``."""
