"""Frozen entry point of the GUI executable ``ddpm-studio`` (windowed on Windows and macOS).

``multiprocessing.freeze_support()`` comes first, before anything heavy is imported: a child
process started from a frozen app re-runs this executable, and must go straight to its task
instead of opening a window. ``--self-test`` is dispatched here as well as (once wired) in
``ddpm_gui.__main__.main``, so a bundle can always prove it works.
"""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if "--self-test" in sys.argv[1:]:
        from ddpm_gui.selftest import run_self_test

        sys.exit(run_self_test(sys.argv[1:]))
    from ddpm_gui.__main__ import main

    sys.exit(main())
