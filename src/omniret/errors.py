"""The one exception family the CLI and HTTP faces turn into a clear one-line message."""


class OmniretError(Exception):
    """A user-facing error: bad input, missing file, mismatched index. The message names the culprit."""


class DataError(OmniretError, ValueError):
    """A malformed data file: the message names the file and the line."""


class IndexMismatchError(OmniretError):
    """An index was queried with an encoder other than the one that built it."""


class ModelNotFoundError(OmniretError):
    """Weights for a named model are not available locally."""


class ConfigError(OmniretError, ValueError):
    """An invalid option or recipe value: the message names the option and the allowed values."""
