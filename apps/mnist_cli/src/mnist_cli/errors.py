"""The app's own errors: each is one line for the user and carries the exit code to use.

Exit codes: 2 for a user error (bad input, bad option, a file that cannot be used), 1 for an
internal error (a bug), 130 after Ctrl-C. SciDevNN's and the data layer's errors are user errors
too; ``mnist_cli.cli`` turns all of them into one line on stderr.
"""

from __future__ import annotations

from scidevnn.errors import SciDevNNError

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class AppError(SciDevNNError):
    """A mistake the user can fix, said in one line (exit code 2)."""

    exit_code = EXIT_USER


class TrainingDivergedError(AppError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class TrainingInterrupted(AppError):  # noqa: N818 - it is a stop, not a failure
    """Ctrl-C during training; a checkpoint was saved (or kept) to resume from."""

    exit_code = EXIT_INTERRUPTED
