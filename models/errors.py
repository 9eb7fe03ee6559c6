"""A user's mistakes, one class per kind. Each message names the problem and the fix; a command
prints it as one line and exits 2 (models/cli.py). They live apart from the modules that raise
them, some of which import torch, so that a command can catch them before it imports torch."""


class ConfigError(ValueError):
    """A config that cannot be trained; the message names the key and the fix."""


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the problem and the fix."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to pass instead."""


class UnknownFamily(ValueError):
    """A family name that the registry does not know; the message lists the known ones."""


class Diverged(ValueError):
    """The training loss became nan or inf (a learning rate too high, most often): nothing worth keeping."""


class OutputError(ValueError):
    """An output folder that cannot be written; the message names the folder and the fix."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, UnknownFamily, Diverged, OutputError)
