"""Whether this machine must have the compiled kernels (core/_narrow_attention.cpp, core/_norm_act.cpp,
core/_winograd.cpp, core/_matmul.cpp).

Every install on x86-64 Linux that has a C++ compiler builds them (gcc has OpenMP and AVX2
intrinsics): there, a missing build is a failure, not a skip. A fresh machine without one installs
and runs without them (setup.py), and their tests skip.
"""
from __future__ import annotations

import platform
import shutil
import sys

MUST_BUILD = (sys.platform == "linux" and platform.machine() == "x86_64"
              and any(shutil.which(c) for c in ("c++", "g++")))
