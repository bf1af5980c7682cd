"""Domain errors. Every user mistake raises a `CharlmError` with a one-line message
that names the problem and the fix; the CLI turns it into `error: ...` and exit 1."""


class CharlmError(Exception):
    """Base class of every error a user can cause and fix."""


class CorpusError(CharlmError):
    """A corpus path is missing, empty, binary or not valid UTF-8."""


class TokenizerError(CharlmError):
    """A tokenizer cannot be fitted, saved, loaded, or asked to decode an id."""


class ConfigError(CharlmError):
    """An option is out of range or options contradict each other."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, corrupt, unsafe, of another format version, or
    would overwrite a different run."""


class DivergedError(CharlmError):
    """Training loss became NaN/inf or exploded."""


class StorageError(CharlmError):
    """A file could not be written or a directory is in use: disk full, no
    permission, a read-only file system, another process training into it."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # the system's words for a failed file operation, for a caller that rephrases it


def one_line(s: str) -> str:
    """`s` with every run of whitespace (newlines included) as one space: a message that stays on one line."""
    return " ".join(s.split())
