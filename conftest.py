"""Test-wide settings: the repository root is importable (for `projects.*`), torch uses few threads,
property tests draw the same examples on every run, and every test gets the logging state back as it
found it."""
import logging
import os
import sys

import pytest
import torch
from hypothesis import settings


ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests run on small tensors where thread start-up costs more than it saves, and CI has 2 cores.
torch.set_num_threads(1)

# CI must pass or fail on the code, not on the day's random draw: by default the property tests draw
# a fixed sequence of examples. `pytest --hypothesis-profile explore` draws new ones each run (what a
# developer runs to look for new failures; each found case then becomes a fixed example or a fix).
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("fixed")

_LOGGERS = ("d2mask", "fvcore", "projects")


@pytest.fixture(autouse=True)
def _reset_logging():
    """A trainer under test calls setup_logger, which attaches handlers (log files in a tmp dir) and
    stops propagation to the root logger, and so to pytest's caplog. Each test starts from Python's
    defaults for these loggers, also after a module-scoped fixture that trained something."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
