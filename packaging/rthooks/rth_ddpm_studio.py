"""PyInstaller runtime hook: runs in the frozen app before the entry script.

* No .pyc files are written next to the bundle: it is installed read-only (/opt, Program Files,
  a signed .app), and stray __pycache__ folders there would outlive an uninstall.
* torch.compile (opt-in, ``train_params.compile``) must not start its compile-worker
  subprocesses: they re-run ``sys.executable``, which in a frozen app is DDPM Studio itself.
  One in-process compile thread avoids that; if compiling fails anyway, the trainer falls back
  to eager mode.
"""
import os
import sys

sys.dont_write_bytecode = True
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
