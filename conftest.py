"""Test-wide settings: the repository root is importable (for `projects.*`), and torch uses few threads."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests run on small tensors where thread start-up costs more than it saves, and CI has 2 cores.
torch.set_num_threads(1)
