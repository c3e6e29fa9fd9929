"""The one error type of the sweep machinery (a module of its own so that every other module,
the sweep engine included, can raise it without importing the grid)."""


class SweepError(ValueError):
    """A problem with a sweep file, its side file or one of its points (names the file and key)."""
