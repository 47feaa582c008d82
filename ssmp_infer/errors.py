"""The one error type user input raises; the CLI turns it into one line on stderr."""


class InputError(ValueError):
    """Bad user input (a file, a shape, an option): the message names the value and what was expected."""


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether a Ctrl-C is behind `error`: Python wraps a KeyboardInterrupt raised inside some hooks
    (`__set_name__` while torch defines a class during its import) in a RuntimeError."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
