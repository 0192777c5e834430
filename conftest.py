"""Collection rules for the whole suite.

Without torch (a NumPy-only install) the modules that import torch are not collected for their doctests;
the tests that need torch skip themselves with ``importorskip``.
"""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["peakloc/nn.py", "peakloc/backends/torch_backend.py", "peakloc/backends/triton_backend.py"]
elif importlib.util.find_spec("triton") is None:
    collect_ignore += ["peakloc/backends/triton_backend.py"]
