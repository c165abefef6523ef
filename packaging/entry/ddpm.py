"""Frozen entry point of the command-line executable ``ddpm`` (``core.cli:run``, console)."""
import multiprocessing

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from core.cli import run

    run()
