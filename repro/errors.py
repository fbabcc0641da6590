"""User-facing errors.

Every problem a user can fix (a wrong path, a malformed file, a bad option)
raises a subclass of :class:`ReproError` with a message that names the file,
field or option and says what was expected. The command line prints these
messages without a traceback; anything else is a bug and keeps its traceback.
"""
import sys


class ReproError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DatasetError(ReproError):
    """A dataset file, folder or image is missing or malformed."""


class ConfigError(ReproError, ValueError):
    """An option has a value the code cannot use (unknown name, out of range)."""


class WeightsError(ReproError):
    """Pretrained weights are missing or belong to another architecture."""


class StorageError(ReproError, OSError):
    """A file could not be written (disk full, quota, read-only file system).

    Raised by :mod:`repro.atomic`, whose writes leave the previous version of
    the file in place; the message says which file and what to do.
    """


def report_errors(command, *args, **kwargs) -> int:
    """Run a command-line entry point: a ReproError prints one line
    ``error: ...`` and gives exit status 2, Ctrl-C gives 130; anything else
    is a bug and keeps its traceback."""
    try:
        return command(*args, **kwargs)
    except ReproError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
