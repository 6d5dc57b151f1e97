"""Logging set-up: rank 0 logs to the console in colour, every rank to its own file."""
import logging
import os
import sys
from typing import Optional

from termcolor import colored

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
# Marks the handlers setup_logger installed, so that calling it again replaces them instead of
# printing every line twice (tests and notebooks set up several runs in one process).
_OWN_HANDLER = "_d2mask_handler"


class _ColorfulFormatter(logging.Formatter):
    """A short, coloured console format: green time and logger name, WARNING/ERROR highlighted."""

    def __init__(self, name: str, short_name: str):
        super().__init__(colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s", datefmt=_DATE_FORMAT)
        self._name = name
        self._short_name = short_name

    def formatMessage(self, record: logging.LogRecord) -> str:
        # a copy: the file handler formats the same record and keeps the full name
        record = logging.makeLogRecord(record.__dict__)
        if record.name.startswith(self._name):
            record.name = self._short_name + record.name[len(self._name):]
        text = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            return colored("WARNING", "red", attrs=["blink"]) + " " + text
        if record.levelno >= logging.ERROR:
            return colored("ERROR", "red", attrs=["blink", "underline"]) + " " + text
        return text


def _log_file(output: str, distributed_rank: int) -> str:
    path = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    if distributed_rank > 0:
        path = f"{path}.rank{distributed_rank}"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return path


def setup_logger(
    output: Optional[str] = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "d2mask",
    abbrev_name: Optional[str] = None,
) -> logging.Logger:
    """Sets up the logger `name` (and so its children, e.g. "d2mask.engine") at DEBUG level.

    Args:
        output: a directory (logs go to `output/log.txt`) or a file ending in .txt/.log; None logs
            to the console only. Ranks > 0 write to `<file>.rank<R>`.
        distributed_rank: only rank 0 logs to the console.
        color: colour the console output.
        name: the logger to set up.
        abbrev_name: how `name` is shown on the console (default: `name`, "d2" for "d2mask").

    Returns:
        The logger. Calling again replaces the handlers a previous call installed.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, _OWN_HANDLER, False)]:
        logger.removeHandler(handler)
        handler.close()
    if abbrev_name is None:
        abbrev_name = "d2" if name == "d2mask" else name

    handlers = []
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.DEBUG)
        plain = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
        console.setFormatter(_ColorfulFormatter(name, abbrev_name) if color else plain)
        handlers.append(console)
    if output is not None:
        file_handler = logging.FileHandler(_log_file(output, distributed_rank), mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT))
        handlers.append(file_handler)
    for handler in handlers:
        setattr(handler, _OWN_HANDLER, True)
        logger.addHandler(handler)
    return logger
