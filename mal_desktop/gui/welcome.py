"""The welcome page shown in the middle of the window while no model is open."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea,
                               QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from .icons import app_icon


class WelcomePage(QWidget):
    """Start actions (demo zoo, open base, open project) and the recent files.

    Parameters: actions - (primary action, *other actions) shown as large buttons.
    Signals: ``recentActivated(str)`` with the path of a clicked recent file.
    """

    recentActivated = Signal(str)

    def __init__(self, actions: list[QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcomePage")
        # Compact enough for the ~250 px the middle of the window has on a 1280 x 720 screen
        # (the docks below keep the rest for their plots): a first-time user sees every
        # action without scrolling; the scroll area below is the last resort for smaller ones.
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(48, 48))
        title = QLabel("<span style='font-size:16pt; font-weight:600'>MAL Desktop</span>")
        subtitle = QLabel("Align the layers of trained models with generalized permutations "
                          "and merge them into a base model.")
        subtitle.setWordWrap(True)
        subtitle.setObjectName("welcomeSubtitle")
        head_text = QVBoxLayout()
        head_text.setSpacing(2)
        head_text.addWidget(title)
        head_text.addWidget(subtitle)
        head = QHBoxLayout()
        head.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        head.addSpacing(10)
        head.addLayout(head_text, 1)

        # The primary action across the card, the others two to a row beneath it: one column
        # of three 40 px buttons made the card ~340 px tall.
        buttons = QGridLayout()
        buttons.setSpacing(6)
        self.buttons: list[QToolButton] = []
        for i, action in enumerate(actions):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setIconSize(QSize(22, 22))
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            button.setMinimumHeight(34)
            button.setAutoRaise(i > 0)
            if i == 0:
                font = button.font()
                font.setBold(True)
                button.setFont(font)
                buttons.addWidget(button, 0, 0, 1, 2)
            else:
                buttons.addWidget(button, 1 + (i - 1) // 2, (i - 1) % 2)
            self.buttons.append(button)

        self._recent_title = QLabel("<b>Recent</b>")
        self._recent = QLabel()
        self._recent.setTextFormat(Qt.TextFormat.RichText)
        self._recent.setOpenExternalLinks(False)
        self._recent.linkActivated.connect(self._on_link)
        self._recent.setWordWrap(True)
        hint = QLabel("Tip: drop model files or a project anywhere on this window.")
        hint.setToolTip("Model files: .safetensors, .pt2, .pt; projects: .malproj")
        hint.setWordWrap(True)
        hint.setEnabled(False)  # drawn in the palette's dimmed text colour

        card = QFrame()
        card.setObjectName("welcomeCard")
        card.setFrameShape(QFrame.Shape.StyledPanel)
        inner = QVBoxLayout(card)
        inner.setContentsMargins(18, 12, 18, 12)
        inner.setSpacing(4)
        inner.addLayout(head)
        inner.addSpacing(8)
        inner.addLayout(buttons)
        inner.addSpacing(6)
        inner.addWidget(hint)
        # Below the actions, so a long list never pushes them out of view.
        inner.addSpacing(4)
        inner.addWidget(self._recent_title)
        inner.addWidget(self._recent)
        card.setMaximumWidth(620)

        page = QWidget()
        outer = QVBoxLayout(page)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 20)  # as wide as the page allows up to its maximum, centred
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        # The card scrolls when the middle of the window is short: its full height was the
        # least height of the window's top half, so the default layout, applied while this page
        # shows, left the plots too short at 1280 x 720 (they had to be scrolled). The card is
        # compact enough (~230 px) not to scroll there; smaller screens still can.
        scroll = QScrollArea()
        scroll.setWidget(page)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.set_recent([])

    def set_recent(self, paths: list[str]) -> None:
        """Show up to six recent files as links (hidden when there are none)."""
        rows = []
        for p in paths[:6]:
            path = Path(p)
            rows.append(f"<a href='{html.escape(p, quote=True)}'>{html.escape(path.name)}</a>"
                        f"&nbsp;&nbsp;<span style='color:gray'>{html.escape(str(path.parent))}"
                        "</span>")
        self._recent.setText("<br>".join(rows))
        self._recent.setVisible(bool(rows))
        self._recent_title.setVisible(bool(rows))

    @Slot(str)
    def _on_link(self, link: str) -> None:
        self.recentActivated.emit(link)
