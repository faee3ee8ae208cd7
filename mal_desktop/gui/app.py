"""Entry point of the desktop app: ``mal-desktop [FILE...] [--demo]`` and ``python -m mal_desktop``.

Start-up order matters for how fast the window appears: arguments are parsed before Qt is
imported (``--version`` and ``--help`` work without a display), the window is built from light
widgets only, and the engine (torch, scipy, pyqtgraph) is imported after it shows (see
main_window.py). The time from process start to the shown window is logged, and printed with
``--startup-probe`` (which then quits: for measurements and smoke tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import __version__

_T_IMPORT = time.perf_counter()


def process_age_s() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere: since this import)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 (starttime), counted after the ")"
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _T_IMPORT


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (Qt's own options such as -platform are passed through)."""
    parser = argparse.ArgumentParser(
        prog="mal-desktop",
        description="MAL Desktop: align and merge layers of a zoo of models into a base model.")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="model files (the first becomes the base when none is open) or a "
                             ".malproj project")
    parser.add_argument("--demo", nargs="?", const="digits", choices=("digits", "language"),
                        help="open a demo zoo: 'digits' (the default: image classifiers) or "
                             "'language' (small Llama-style language models); built on first "
                             "use, then cached")
    parser.add_argument("--settings", metavar="INI", type=Path,
                        help="use this settings file instead of the per-user one")
    parser.add_argument("--theme", choices=("system", "light", "dark"),
                        help="override the theme for this run")
    # Measurements and smoke tests (e.g. of a PyInstaller build): "window" prints the time to
    # the shown window and quits; "engine" also waits for the engine and the FILEs to load.
    parser.add_argument("--startup-probe", nargs="?", const="window", choices=("window", "engine"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="install the .desktop entry and icons for the current user "
                             "(~/.local/share) and exit")
    parser.add_argument("--version", action="version", version=f"mal-desktop {__version__}")
    args, qt_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    args.qt_args = qt_args
    return args


def create_app(qt_args: Sequence[str] = ()) -> "QApplication":  # noqa: F821
    """The QApplication with names (settings, desktop integration) and the icon set."""
    from PySide6.QtCore import QCoreApplication, Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from .icons import app_icon

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(["mal-desktop", *qt_args])
    QCoreApplication.setOrganizationName("mal_desktop")
    QCoreApplication.setApplicationName("mal-desktop")
    QCoreApplication.setApplicationVersion(__version__)
    QGuiApplication.setApplicationDisplayName("MAL Desktop")
    QGuiApplication.setDesktopFileName("mal-desktop")  # matches resources/mal-desktop.desktop
    app.setWindowIcon(app_icon())
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the desktop app; returns the exit code."""
    args = parse_args(argv)
    if args.install_desktop_entry:
        from .desktop_entry import install_desktop_entry

        try:
            written = install_desktop_entry()
        except OSError as exc:
            print(f"mal-desktop: error: {exc.filename or ''}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        print("installed " + ", ".join(str(p) for p in written[:1]) +
              f" and {len(written) - 1} icons")
        return 0
    from PySide6.QtCore import QTimer

    from .log import LOG, install_error_hooks, setup_logging
    from .main_window import MainWindow
    from .settings import Settings
    from .theme import ThemeController

    app = create_app(args.qt_args)
    settings = Settings(args.settings) if args.settings else Settings()
    log_path = setup_logging(settings.data_dir() / "logs")
    install_error_hooks()
    LOG.info("mal-desktop %s starting (log %s)", __version__, log_path)
    theme = ThemeController(app, args.theme or settings.theme)
    window = MainWindow(settings, theme=theme)
    window.show()

    def shown() -> None:
        handle = window.windowHandle()
        if handle is not None and not handle.isExposed() and process_age_s() < 30:
            QTimer.singleShot(5, shown)  # not on screen yet: measure when it is
            return
        age = process_age_s()
        LOG.info("window shown %.0f ms after the process started", 1000 * age)
        if args.startup_probe:
            heavy = [m for m in ("torch", "scipy", "pyqtgraph") if m in sys.modules]
            print(f"time_to_window_ms={1000 * age:.0f} heavy_modules_loaded={heavy or 'none'}",
                  flush=True)
            if args.startup_probe == "window":
                window.shutdown()
                app.exit(0)  # not quit(): that closes windows first, which may ask questions
                return
            window.jobs.runner.failed.connect(lambda message, _details: _probe_failed(message))
            QTimer.singleShot(50, engine_probe)
        window.start_up(args.files, demo=args.demo)

    def _probe_failed(message: str) -> None:
        print(f"probe failed: {message}", flush=True)
        app.exit(1)

    def engine_probe() -> None:
        engine = window.session.engine
        if engine is None or window.jobs.is_busy():
            QTimer.singleShot(50, engine_probe)
            return
        ws = window.workspace
        models = ([ws.base.name] if ws.base else []) + list(ws.zoo)
        print(f"engine_ready_ms={1000 * process_age_s():.0f} device={engine.device!r} "
              f"datasets={sorted(engine.datasets)} models={models}", flush=True)
        window.shutdown()
        app.exit(0)

    QTimer.singleShot(0, shown)  # runs once the event loop has shown the window
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
