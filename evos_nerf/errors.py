"""Errors a user can cause. CLIs print these as one line, without a traceback."""


class UserInputError(ValueError):
    """Bad input from the user: a path, an image, a ratio, a size. The message names the value."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and what to try."""
