"""Frozen entry point of the command-line executable ``ddpm`` (``core.cli:main``, console)."""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from core.cli import main

    sys.exit(main())
