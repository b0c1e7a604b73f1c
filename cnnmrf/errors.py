"""The one exception type for expected failures; the CLI prints its message as a single line and exits 1."""


class CnnmrfError(Exception):
    """An expected, user-facing failure (missing file, bad format, conflicting options)."""
