"""The exceptions lmforge raises for user mistakes.

Every message names the offending value and how to fix it; the CLI prints it on one line. Internal
invariants use `assert` instead, because a failed invariant is a bug, not a user mistake.
"""


class LmforgeError(Exception):
    """Base class: a problem the user can fix (bad config, bad data, bad checkpoint)."""


class ConfigError(LmforgeError):
    """A config key, value, recipe file or command-line argument is wrong."""


class DataError(LmforgeError):
    """Input data (a source file, a data dir, a task file) is missing or malformed."""


class ShardFormatError(DataError):
    """A token shard has the wrong magic, version, dtype or length."""


class CheckpointError(LmforgeError):
    """A run dir or checkpoint is missing, incomplete, corrupted or incompatible."""
