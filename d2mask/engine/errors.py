"""Which errors are the user's to fix, and how scripts report them.

A user error comes from the input of a run: a config file, key or value, a command-line flag, a
module listed in IMPORTS, a registry name, a dataset, a weights file. Its message names the
file/key/value and says what was expected, so `tools/train_net.py` prints that message alone and
exits with `EXIT_USER_ERROR`; a traceback into d2mask's internals would only bury it. Every other
exception is a bug or a failure of the machine and keeps its traceback.
"""
import sys
from typing import Any, Callable

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..data import DatasetError
from ..utils.atomic_write import DiskFullError
from ..utils.download import DownloadError
from ..utils.registry import RegistryError

__all__ = [
    "EXIT_USER_ERROR",
    "LaunchError",
    "TrainingInterrupted",
    "USER_ERRORS",
    "user_error_message",
    "report_user_errors",
]

# The exit status of a run stopped by a user error; argparse uses it for a bad command line too.
EXIT_USER_ERROR = 2


class LaunchError(ValueError, RuntimeError):
    """A job that cannot start as asked on this machine (--num-gpus, --num-machines, --dist-url),
    or one of whose processes stopped on a user error (reported by that process)."""


class TrainingInterrupted(SystemExit):
    """Training stopped by a signal (SIGTERM, SIGINT, a cluster's requeue signal) after it saved a
    checkpoint of its last iteration. Exits like a process killed by that signal, with status
    128 + its number (SIGTERM 143, SIGINT 130, SIGUSR1 138), so that job scripts and shells see the
    usual code; `--resume` continues the run."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


USER_ERRORS = (
    ConfigError,  # config files, keys and values; settings that contradict each other or the data
    ImportError,  # a module named in IMPORTS (the message carries the module's own error)
    RegistryError,  # a name no registry (of model parts, of datasets) has
    CheckpointError,  # weights that are corrupt, truncated or carry code
    DatasetError,  # dataset files, records and images
    FileNotFoundError,  # a config, json, image or weights file that is not there
    DownloadError,  # a weights URL that is not https, cannot be reached, or fails its checksum
    LaunchError,
    DiskFullError,  # an output that does not fit on its device; the previous file is kept
)


def user_error_message(error: BaseException) -> str:
    """The one line a script prints for a user error: its type and message."""
    text = str(error)
    if "\nOriginal Traceback" in text:
        # Raised again from a DataLoader worker, with the worker's traceback in the message; the
        # worker's own message is its last line, after the exception's name.
        text = text.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
    return f"{type(error).__name__}: {text}"


def report_user_errors(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Returns `main(*args, **kwargs)`; a user error ends the process instead, with its one line on
    stderr and exit status `EXIT_USER_ERROR`. The `__main__` block of every tool runs through this."""
    try:
        return main(*args, **kwargs)
    except USER_ERRORS as e:
        print(user_error_message(e), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
