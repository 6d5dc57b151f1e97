"""Test-wide settings: the repository root is importable (for `projects.*`), torch uses few threads,
and each test starts with d2mask's logger as Python leaves it."""
import logging
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests run on small tensors where thread start-up costs more than it saves, and CI has 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _reset_d2mask_logger():
    """A trainer under test calls setup_logger, which stops propagation to the root logger (and so to
    pytest's caplog) and opens log files in a tmp dir; undo both so later tests are unaffected."""
    yield
    logger = logging.getLogger("d2mask")
    logger.propagate = True
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
