"""A guard against the references to None, True and False that PySide6 6.12 drops.

On Python 3.11, every call of a Qt method that returns nothing (``widget.update()``,
``setEnabled(True)``, the static ``processEvents()``...) takes one reference from None that it
never gave, and some calls do the same to True and False. None starts with some 60,000
references once torch is loaded, and once the calls outnumber them the interpreter aborts
("Fatal Python error: none_dealloc"; measured here with a loop of ``setEnabled`` calls), while a
window that updates its plots and progress several times a second makes such calls all the
time. Python 3.12 made these three objects immortal, which is why PySide's own tests do not see
it. Until PySide fixes it, the app gives them the same immortality on older Pythons.
"""
from __future__ import annotations

import ctypes
import functools
import sys

# Enough references that dropping a million a second would take twelve days to spend them,
# while far from ob_refcnt's limit (2**63).
SPARE_REFERENCES = 1 << 40


@functools.cache
def pin_singletons() -> None:
    """Give None, True and False so many references that no leak can free them (once a process)."""
    if sys.version_info >= (3, 12):  # immortal there: their counts are not counted
        return
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every object in CPython's (non-debug) layout.
        ctypes.c_ssize_t.from_address(id(singleton)).value += SPARE_REFERENCES
