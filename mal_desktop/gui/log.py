"""One log file and one path for errors to reach the user.

Every error, from any thread, ends up in :func:`report_error`: it is logged (with its traceback)
to the log file and shown in one readable message box whose technical details are collapsed.
Uncaught exceptions (``sys.excepthook``, ``threading.excepthook``) and Qt's own warnings are
routed here too, so nothing fails silently and no raw traceback is ever shown as the message.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, QtMsgType, Signal, Slot, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QWidget

from ..core.errors import MalError
from .error_box import show_error

LOG = logging.getLogger("mal_desktop")
_log_file: Path | None = None


def setup_logging(folder: Path, level: int = logging.INFO) -> Path:
    """Log to ``folder/mal-desktop.log`` (rotated at 1 MB, 3 kept); returns the file path."""
    global _log_file
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mal-desktop.log"
    root = logging.getLogger("mal_desktop")
    for handler in list(root.handlers):  # a second call (tests) replaces the file handler
        if getattr(handler, "_mal_file", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3,
                                                   encoding="utf-8")
    handler._mal_file = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    _log_file = path
    return path


def log_file() -> Path | None:
    """The current log file (None before :func:`setup_logging`)."""
    return _log_file


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """A one-line message for the user and the technical details to show behind it.

    MalError messages are already written for users and are complete: no details (a traceback
    behind "Show Details..." would only alarm; the log still gets it, see :func:`log_details`).
    Anything else is an unexpected failure, named by its type so a bug report can quote it,
    with the traceback as details.
    """
    details = log_details(exc)
    if isinstance(exc, MalError):
        return str(exc), ""
    if isinstance(exc, MemoryError):
        return "Out of memory: the operation needs more memory than is available.", details
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"Unexpected error ({type(exc).__name__}){': ' + text if text else ''}. "
            "This is a bug; the details have been written to the log file."), details


def log_details(exc: BaseException) -> str:
    """The full traceback of ``exc``, for the log file."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _ErrorRelay(QObject):
    """Lives in the GUI thread; a queued signal carries errors there from any thread."""

    error = Signal(str, str, str)

    def __init__(self) -> None:
        super().__init__()
        self.error.connect(self._show)
        self.parent_widget: QWidget | None = None

    @Slot(str, str, str)
    def _show(self, title: str, message: str, details: str) -> None:
        show_error(self.parent_widget, message, details, title=title, log_path=_log_file)


_relay: _ErrorRelay | None = None


def install_error_hooks(parent: QWidget | None = None) -> None:
    """Route uncaught exceptions and Qt warnings to the log and the error dialog.

    Call once from the GUI thread after the QApplication exists. ``parent`` is the window the
    dialogs belong to (may be set later with :func:`set_error_parent`).
    """
    global _relay
    if _relay is None:
        _relay = _ErrorRelay()
    _relay.parent_widget = parent
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    qInstallMessageHandler(_qt_message)


def set_error_parent(parent: QWidget | None) -> None:
    """Make error dialogs children of ``parent`` (the main window)."""
    if _relay is not None:
        _relay.parent_widget = parent


def report_error(message: str, details: str = "", title: str = "MAL Desktop",
                 parent: QWidget | None = None) -> None:
    """Log an error and show it to the user (from any thread).

    Parameters: message - one readable line; details - traceback or technical text, shown
    collapsed; title - window title of the message box; parent - dialog parent (GUI thread only).
    """
    LOG.error("%s%s", message, ("\n" + details) if details else "")
    if QApplication.instance() is None:
        return  # headless (e.g. a script using the runner): the log is all we can do
    on_gui_thread = threading.current_thread() is threading.main_thread()
    if parent is not None and on_gui_thread:
        show_error(parent, message, details, title=title, log_path=_log_file)
    elif _relay is not None:
        _relay.error.emit(title, message, details)  # queued to the GUI thread when needed


def report_exception(exc: BaseException, title: str = "MAL Desktop",
                     parent: QWidget | None = None) -> None:
    """:func:`report_error` for an exception object."""
    message, details = describe_exception(exc)
    if not details:  # a user error: its traceback goes to the log only
        LOG.info("%s: %s", title, log_details(exc))
    report_error(message, details, title, parent)


def _excepthook(kind: type[BaseException], exc: BaseException,
                tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    exc.__traceback__ = tb
    report_exception(exc)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        report_exception(args.exc_value)


_QT_LEVELS = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}


def _qt_message(kind: QtMsgType, context: object, message: str) -> None:
    level = _QT_LEVELS.get(kind, logging.WARNING)
    logging.getLogger("mal_desktop.qt").log(level, "%s", message)
    if level >= logging.WARNING and "propagateSizeHints" not in message:  # offscreen noise
        sys.stderr.write(f"qt: {message}\n")  # visible when started from a terminal
