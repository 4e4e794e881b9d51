"""The one base of every error a user can cause and fix (bad input, unreachable storage, missing runs).

The CLI catches :class:`VoxclustError` and prints its message as one line (exit code 2); anything else is
a bug and keeps its traceback. Each room raises its own subclass (``StorageError``, ``StoreError``, ...),
so a caller can still catch one kind only.
"""

from __future__ import annotations


class VoxclustError(Exception):
    """A user-facing error: its message says what was wrong and, where it can, what to do."""
