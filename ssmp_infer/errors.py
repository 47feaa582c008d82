"""The one error type user input raises; the CLI turns it into one line on stderr."""


class InputError(ValueError):
    """Bad user input (a file, a shape, an option): the message names the value and what was expected."""
