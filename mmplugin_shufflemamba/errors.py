"""The error type of a refused setting (it imports nothing of the package, so that every
part can raise it). The argument checks of the models, the ops, the checkpoint loaders
and the data transforms raise it; the tools stop on it with its message, without a
traceback (``utils.STOP_ERRORS``)."""


class ArgumentError(Exception):
    """A setting (a constructor's argument, a config value) this package refuses; the
    message names it, the value and the fix."""


class ArgumentValueError(ArgumentError, ValueError):
    """A value out of range, or settings that contradict each other."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A value of the wrong kind, or an argument the class does not take."""


class ArgumentKeyError(ArgumentError, KeyError):
    """A name that is not among the known ones (an arch)."""

    __str__ = Exception.__str__  # the message, not KeyError's repr of it


def relative_path_note(path: str, unlike_base: bool = True) -> str:
    """For a refusal of a path that does not exist: where a relative one was looked for,
    the current directory (with ``unlike_base``: and not a config's folder, as
    ``_base_`` would be); '' for an absolute path."""
    import os
    return '' if os.path.isabs(path) else (
        f' (a relative path: looked for in the current directory, {os.getcwd()}'
        + (", not in a config's folder)" if unlike_base else ')'))
