"""The one place that builds the QApplication, and the window factory.

Names, icon, style and error routing are set here once, so the window, the tests and a frozen
build all run with the same application. Nothing here imports torch, except
:func:`import_engine_behind_splash`, which exists to do so before the window is shown.
"""
from __future__ import annotations

import gc
import sys
import traceback
from types import TracebackType
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QMessageBox, QSplashScreen

from .pyside_refcounts import pin_singletons
from .settings import APP_NAME

if TYPE_CHECKING:  # the window module is imported when a window is made, not with the app
    from .main_window import MainWindow

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
SPLASH_SIZE = (360, 270)
SPLASH_BACKGROUND = "#20232a"
SPLASH_TEXT = "#e8e8e8"
#: Seconds between the UI thread's garbage collections (see :func:`collect_garbage_on_ui_thread`).
GC_INTERVAL_S = 0.5
# How long a thread running Python keeps the GIL once another wants it (CPython: 5 ms). The UI
# thread takes and gives back the GIL at every Python slot, paint override and Qt call, each
# time waiting out a busy worker's interval: a 6 ms paint took 16 ms beside a scan or a sampler.
GIL_SWITCH_INTERVAL_S = 0.0005


def app_icon() -> QIcon:
    """The icon at every shipped size (resources/icons/ddpm-studio-<px>.png)."""
    from core.resources import resources_dir

    icon = QIcon()
    for size in ICON_SIZES:
        path = resources_dir() / "icons" / f"ddpm-studio-{size}.png"
        if path.exists():
            icon.addFile(str(path))
    return icon


def get_qapp(argv: list[str] | None = None, *, route_exceptions: bool = True) -> QApplication:
    """The QApplication, created and configured on the first call.

    ``route_exceptions`` installs an excepthook that shows uncaught errors in a dialog: a windowed
    app has no console. Tests leave it off, pytest-qt reports those errors itself.
    """
    pin_singletons()
    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv if argv is None else argv)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setDesktopFileName("ddpm-studio")
    app.setWindowIcon(app_icon())
    app.setStyle("Fusion")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    if route_exceptions:
        sys.excepthook = show_exception
    collect_garbage_on_ui_thread(app)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return app


def collect_garbage_on_ui_thread(app: QApplication) -> None:
    """Run Python's cycle collector only on the UI thread (see :class:`UiThreadCollector`)."""
    if getattr(app, "_ui_thread_gc", None) is None:
        from .garbage import UiThreadCollector

        app._ui_thread_gc = UiThreadCollector(GC_INTERVAL_S, app)


def show_exception(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """Uncaught errors: the message for people, the traceback behind "Show Details"."""
    from .banner import error_text

    details = "".join(traceback.format_exception(kind, error, tb))
    if sys.stderr is not None:
        sys.stderr.write(details)
    if QApplication.instance() is None or issubclass(kind, KeyboardInterrupt):
        return
    box = QMessageBox(QMessageBox.Icon.Critical, APP_NAME, error_text(error, "Something went wrong"))
    box.setDetailedText(details)
    box.exec()


def import_engine_behind_splash(app: QApplication) -> QSplashScreen:
    """Import the engine (torch and ``core``'s modules) behind a splash screen, before the window.

    Importing torch holds Python's GIL in single calls of up to half a second (its C extension
    initialises in one go), and no other thread runs Python meanwhile, the UI thread included:
    loaded behind a shown window, the window looked ready and froze. A splash that says what
    is happening, followed by a window that answers at once, is the honest order. The window
    still asks a worker for the engine's facts (devices), which are then known already.

    What was imported lives as long as the process, so it is then frozen out of the cycle
    collector (``gc.freeze``): the collector runs on the UI thread (see
    :func:`collect_garbage_on_ui_thread`), and a full pass over torch's hundreds of thousands of
    objects held it for 200 ms. Returns the splash for the caller to ``finish`` once the window
    is up.
    """
    splash = QSplashScreen(_splash_pixmap())
    splash.showMessage("Loading the engine (PyTorch)…",
                       Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignHCenter, QColor(SPLASH_TEXT))
    splash.show()
    app.processEvents()
    from .engine import load_engine, prepare_training

    load_engine()  # imports, and learns the devices, for the window to ask for at no cost
    prepare_training()
    gc.collect()
    gc.freeze()
    return splash


def _splash_pixmap() -> QPixmap:
    """The icon and the app's name on a dark card, with room below for the message."""
    pixmap = QPixmap(*SPLASH_SIZE)
    pixmap.fill(QColor(SPLASH_BACKGROUND))
    painter = QPainter(pixmap)
    painter.drawPixmap((SPLASH_SIZE[0] - 160) // 2, 28, app_icon().pixmap(160, 160))
    font = painter.font()
    font.setPointSize(16)
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor(SPLASH_TEXT))
    painter.drawText(0, 200, SPLASH_SIZE[0], 40, Qt.AlignmentFlag.AlignHCenter, APP_NAME)
    painter.end()
    return pixmap


def create_main_window(*, load_demo: bool = False) -> MainWindow:
    """The main window, built, laid out and drawn once off screen, but not shown and without
    entering the event loop. ``load_demo``, for a process that imported the engine behind the
    splash: load the built-in demo the config names, too (:meth:`MainWindow.load_demo_now`).

    A window's first show fills Qt's style, font and glyph caches and creates its platform window
    and backing store: 20-30 ms on the UI thread, which painting into a pixmap (``grab``) only
    halves; each page's first show lays it out. Shown once where nobody sees it, page by page,
    behind the splash, the real window then draws its first frame in about 5 ms and answers the
    moment it appears.
    """
    app = get_qapp(route_exceptions=False)
    from .main_window import MainWindow

    window = MainWindow()
    if load_demo:
        window.load_demo_now()
    window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    window.show()
    app.processEvents()
    for index in range(window.pages.count()):  # every page too: the first switch to the Train
        window.pages.setCurrentIndex(index)  # page laid out its plot for 12 ms as training began
        app.processEvents()
    window.pages.setCurrentIndex(window.nav.currentRow())
    window.hide()
    window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, False)
    return window
