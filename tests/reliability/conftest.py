"""Reliability tests build trainers and run train_net's setup, which attach handlers to d2mask's
loggers and stop their propagation: each test gets the logging state back as it was. No test
writes generated datasets into the user's ~/.cache."""
import logging

import pytest

_LOGGERS = ("d2mask", "fvcore", "projects")


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2MASK_DATASETS", str(tmp_path / "datasets"))
