"""``ddpm-studio`` and ``python -m ddpm_gui``: open the window.

``--self-test`` runs the packaged app's end-to-end check (see ``selftest``); ``--timing`` prints
how long the window took to appear and when the engine was ready (torch is imported behind a
splash screen before the window, see ``app.import_engine_behind_splash``).
"""
from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402 - the clock starts before anything else is imported
import io  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402


def _ensure_streams() -> None:
    """A windowed frozen build has no console: sys.stdout/stderr are None, and writes would crash."""
    if sys.stdout is None:
        sys.stdout = io.StringIO()
    if sys.stderr is None:
        sys.stderr = io.StringIO()


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    _ensure_streams()
    from core.allocator import keep_freed_memory

    keep_freed_memory()  # CPU training and sampling steps reuse each other's memory (see core.allocator)
    args_in = sys.argv[1:] if argv is None else argv
    if "--self-test" in args_in:
        from .selftest import run_self_test

        return run_self_test(args_in)
    from core import __version__

    parser = argparse.ArgumentParser(prog="ddpm-studio", description="Train a diffusion model on your images.")
    parser.add_argument("--version", action="version", version=f"ddpm-studio {__version__}",
                        help="print the version and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="train, sample and export a tiny model without a window, print a JSON verdict "
                             "and exit 0 if all went well (see --self-test --help for its options)")
    parser.add_argument("--timing", action="store_true", help="print start-to-window and engine-load times")
    parser.add_argument("--quit-after-ready", action="store_true",
                        help="close once the engine has loaded (for start-up measurements)")
    args, qt_args = parser.parse_known_args(args_in)

    from .app import create_main_window, get_qapp, import_engine_behind_splash

    app = get_qapp([sys.argv[0], *qt_args])
    splash = import_engine_behind_splash(app)
    window = create_main_window(load_demo=True)
    if args.timing:
        window.shown.connect(lambda: print(f"start-to-window: {(window.shown_at - START) * 1000:.0f} ms", flush=True))
        window.engineReady.connect(
            lambda _: print(f"start-to-engine-ready: {(time.perf_counter() - START) * 1000:.0f} ms", flush=True))
    if args.quit_after_ready:
        window.engineReady.connect(lambda _: window.close())
    window.show()
    splash.finish(window)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
