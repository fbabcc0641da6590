"""User-facing errors.

Every problem a user can fix (a wrong path, a malformed file, a bad option)
raises a subclass of :class:`ReproError` with a message that names the file,
field or option and says what was expected. The command line prints these
messages without a traceback; anything else is a bug and keeps its traceback.
"""


class ReproError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DatasetError(ReproError):
    """A dataset file, folder or image is missing or malformed."""


class ConfigError(ReproError, ValueError):
    """An option has a value the code cannot use (unknown name, out of range)."""


class WeightsError(ReproError):
    """Pretrained weights are missing or belong to another architecture."""
