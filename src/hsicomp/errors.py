"""User-facing errors: reported as one line by the command line, never as a traceback."""


class HsicompError(Exception):
    """An error caused by the user's input (bad file, bad config, failed check)."""
