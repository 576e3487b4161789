"""The one error type for a user's mistake.

It subclasses ``ValueError`` so Python callers can catch the familiar type, and the CLI turns it into a
one-line message with exit status 2 instead of a traceback.
"""


class MobilenetError(ValueError):
    """A user's input is wrong; the message says what and how to fix it."""
