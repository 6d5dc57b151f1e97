"""Engine tests call setup_logger (directly or through DefaultTrainer), which attaches handlers to
the "d2mask" logger and stops its propagation; each test gets the logging state back as it was, so
that later tests (caplog relies on propagation) are unaffected."""
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
