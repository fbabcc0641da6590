"""User-facing errors.

Every problem a user can fix (a wrong path, a malformed file, a bad option)
raises a subclass of :class:`ReproError` with a message that names the file,
field or option and says what was expected. The command line prints these
messages without a traceback; anything else is a bug and keeps its traceback.
"""
import sys
from contextlib import contextmanager


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


class DeviceMemoryError(ReproError):
    """The GPU ran out of memory; the message names the setting to lower."""


@contextmanager
def explain_out_of_memory(doing: str, lower: str):
    """Turn torch's out-of-memory error inside the block into a :class:`DeviceMemoryError`
    that says what ran out (``doing``, e.g. "extracting a batch of 32 images of 480x640")
    and what to lower (``lower``, e.g. "eval_batch_size (--eval-batch-size)"), instead of a
    CUDA traceback."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise DeviceMemoryError(f"the GPU ran out of memory while {doing}. Lower {lower}; precision bf16 "
                                f"(--precision bf16, the CUDA default) also halves the activations. "
                                f"(torch: {first})") from None


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
