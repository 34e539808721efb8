"""One error base class; the CLI turns any EdgecnnError into `Error: ...` and exit 1.

Library code raises these for anything the user can fix (bad input, missing
tools, a model past its accuracy gate). Bugs stay ordinary exceptions.
"""


class EdgecnnError(Exception):
    """Base class: a problem the user can act on, explained in one line."""

    exit_code = 1


class ConfigError(EdgecnnError):
    """Options that cannot go together or are out of range (`--device` with `--emulate`, a bad ratio).

    Exit code 1 like every other EdgecnnError: click's own usage errors exit 2 before any
    library code runs, and scripts already read 1 as "edgecnn refused this".
    """


class TargetError(EdgecnnError):
    """Unknown target, or a target file that breaks the schema."""


class ModelError(EdgecnnError):
    """Unknown zoo model, unreadable or unsupported model file, bad builder option."""


class DataError(EdgecnnError):
    """Missing, empty or malformed data set, calibration set or image."""


class ToolError(EdgecnnError):
    """A required external tool (compiler, qemu, ssh) is missing or failed."""


class AccuracyError(EdgecnnError):
    """A transformed model lost more accuracy than the user allowed."""


class EdgecnnWarning(UserWarning):
    """A note for the user (a small calibration set, accuracy not measured): the CLI prints it as it happens."""


def one_line(error: BaseException | str) -> str:
    """The message on one line: a library's multi-line text (a converter's stack of causes) would otherwise
    print as an `Error:` line followed by lines no tool reading stderr attributes to it."""
    return " ".join(str(error).split())
