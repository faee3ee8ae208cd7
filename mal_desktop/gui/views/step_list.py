"""StepListView: the table of assembly steps (numbered two-line rows whose every column stays
in view, a hint when empty, a context menu for the mouse and the Menu key)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QStyle, QStyledItemDelegate,
                               QStyleOptionViewItem, QTreeView, QWidget)

from ..models.plan_model import CHECK_ROLE, COL_BASE, COL_CASE, COL_SOURCE
from .context_menu import menu_target

# Columns whose text may be elided (full text in the row's tooltip) when even the two-line
# layout does not fit the dock: they share the room left evenly (a column needing less keeps
# its width); lambda, alignment and method show whole.
ELIDABLE = (COL_SOURCE, COL_BASE, COL_CASE)
ELIDED_MIN = 64  # an elidable column keeps at least this much (logical px)
_PAD = 6  # room between columns beyond the style's own cell margins


PATH = "path"  # an elision mode of _elide_lines: a layer path (see elide_path)


def elide_path(metrics: QFontMetrics, path: str, width: int) -> str:
    """A dotted layer path in ``width`` pixels, keeping what tells steps apart: the block index
    and the layer's own name. Leading components go first ("…layers.0.self_attn.q_proj",
    "…0.self_attn.q_proj"), then the names between the index and the layer shrink to their
    initials ("…0.s.q_proj") and go ("…0.…q_proj"); character elision is the last resort (a plain
    left elision cut "model.layers.0.self_attn.q_proj" to "….self_attn.q_proj": which block?).
    """
    if metrics.horizontalAdvance(path) <= width:
        return path
    parts = path.split(".")
    index = max((i for i, p in enumerate(parts) if p.isdigit()), default=-1)
    candidates = ["\u2026" + ".".join(parts[i:]) for i in range(1, max(index, 0) + 1)]
    if 0 <= index < len(parts) - 2:
        middle = [p[:1] for p in parts[index + 1:-1]]
        candidates.append("\u2026" + ".".join([parts[index], *middle, parts[-1]]))
        candidates.append(f"\u2026{parts[index]}.\u2026{parts[-1]}")
    for text in candidates:
        if metrics.horizontalAdvance(text) <= width:
            return text
    return metrics.elidedText(candidates[-1] if candidates else path,
                              Qt.TextElideMode.ElideLeft, width)


def _elide_lines(option: QStyleOptionViewItem, lines: list[str],
                 modes: list[Qt.TextElideMode | str], lead: str = "") -> str:
    """``lines`` (after ``lead`` on the first) each elided to the cell's text width with its own
    mode, joined as the view's line separator (U+2028). Whole when the option has no cell yet
    (asked for a size hint: the width the text needs)."""
    if option.rect.width() <= 0:
        return "\u2028".join((lead if k == 0 else "") + line for k, line in enumerate(lines))
    style = option.widget.style() if option.widget is not None else QApplication.style()
    margin = style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, option, option.widget)
    # the text's rect as the style lays the cell out (beside the warning icon, if any), less
    # the margins it draws the text with
    text_rect = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option,
                                     option.widget)
    room = text_rect.width() - 2 * (margin + 1)
    metrics = option.fontMetrics
    out = []
    for k, (line, mode) in enumerate(zip(lines, modes)):
        head = lead if k == 0 else ""
        width = max(0, room - metrics.horizontalAdvance(head))
        out.append(head + (elide_path(metrics, line, width) if mode == PATH
                           else metrics.elidedText(line, mode, width)))
    return "\u2028".join(out)


class _PathDelegate(QStyledItemDelegate):
    """A layer path elided by :func:`elide_path`: "…1.mlp.up_proj" tells steps apart where the
    view's middle elision ("model.lay…p.up_proj") dropped the block index."""

    def initStyleOption(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt's name
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        lines = option.text.replace("\u2028", "\n").split("\n")
        # the second line (a block's "+ 2 norms") is no path, but ends what it says
        option.text = _elide_lines(option, lines,
                                   [PATH, *[Qt.TextElideMode.ElideLeft] * (len(lines) - 1)])


class _NumberedDelegate(QStyledItemDelegate):
    """Draws "3. " before the first column: the step number is the row, not model data. The
    second line (the layer) is indented under the model name. The model name is elided in
    the middle (its seed and variant sit at the end), the layer path at its start."""

    def initStyleOption(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt's name
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        number = f"{index.row() + 1}.  "
        metrics = option.fontMetrics
        # no-break spaces: the text layout drops ordinary ones at the start of a line
        indent = "\u00a0" * round(metrics.horizontalAdvance(number)
                                  / max(1, metrics.horizontalAdvance("\u00a0")))
        # Qt has already turned the model's "\n" into a line separator (U+2028)
        first, _, rest = option.text.replace("\u2028", "\n").partition("\n")
        text = _elide_lines(option, [first], [Qt.TextElideMode.ElideMiddle], number)
        if rest:
            layer = _elide_lines(option, [rest], [PATH], indent)
            if "\u2026" in layer:  # squeezed: the indent's room goes to the layer's name
                layer = _elide_lines(option, [rest], [PATH])
            text += "\u2028" + layer
        option.text = text


class StepListView(QTreeView):
    """The step table; shows a hint when the plan has no steps yet.

    Signals: ``menuRequested(QModelIndex, QPoint)`` - a context menu for a row (the current one
    for the Menu key) at a global position.
    """

    menuRequested = Signal(QModelIndex, QPoint)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setItemDelegateForColumn(COL_SOURCE, _NumberedDelegate(self))
        self.setItemDelegateForColumn(COL_BASE, _PathDelegate(self))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAllColumnsShowFocus(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWordWrap(False)  # lines break where the model puts them, never mid-word

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt's name
        index, where = menu_target(self, event)
        self.menuRequested.emit(index, where)
        event.accept()

    def column_needs(self) -> dict[int, int]:
        """The width each column needs to show its header and every row whole (logical px)."""
        model, header = self.model(), self.header()
        if model is None:
            return {}
        return {c: max(self.sizeHintForColumn(c), header.sectionSizeHint(c)) + _PAD
                for c in range(model.columnCount())}

    def _cases_need(self) -> int:
        """The width the case column needs for the steps that can run (their short numbers;
        a warning's sentence, in a step that cannot, may elide)."""
        model = self.model()
        widths = [self.sizeHintForIndex(model.index(row, COL_CASE)).width()
                  for row in range(model.rowCount())
                  if model.index(row, COL_CASE).data(CHECK_ROLE).ok]
        return max(widths, default=0) + _PAD

    def needed_width(self) -> int:
        """The view's width that shows every column whole: columns, frame and a vertical scroll
        bar (shown once there are more steps than rows in view)."""
        bar = self.style().pixelMetric(self.style().PixelMetric.PM_ScrollBarExtent)
        return sum(self.column_needs().values()) + 2 * self.frameWidth() + bar

    def fit_columns(self) -> None:
        """Every column shown, at the width its contents need; the step column takes what is
        left over. Narrower than that (a dock the user made small), the step, base-layer and
        width-case columns share the room the others leave, eliding their text (each row's
        tooltip has it all); only when even that does not fit does a horizontal scroll bar
        appear. No column is ever hidden: a user wants to see every column of the plan."""
        header = self.header()
        need = self.column_needs()
        if not need:
            return
        avail = self.viewport().width()
        widths = dict(need)
        over = sum(widths.values()) - avail
        if over > 0:  # the elidable columns share what is left evenly, none below ELIDED_MIN
            room = avail - sum(w for c, w in need.items() if c not in ELIDABLE)
            # the width cases' numbers first: cut ("out 12\u20264 pad") they say nothing, while
            # names and paths elide keeping what tells them apart; a warning's words share
            cases = max(0, min(need[COL_CASE], self._cases_need(),
                               room - ELIDED_MIN * len(ELIDABLE)))
            room -= cases
            rest = {c: need[c] - (cases if c == COL_CASE else 0) for c in ELIDABLE}
            cap = ELIDED_MIN
            for k, col in enumerate(sorted(ELIDABLE, key=rest.__getitem__)):
                cap = max(ELIDED_MIN, room // (len(ELIDABLE) - k))  # shared by those left
                if rest[col] > cap:
                    break
                room -= rest[col]
            for col in ELIDABLE:
                widths[col] = min(rest[col], cap) + (cases if col == COL_CASE else 0)
            over = sum(widths.values()) - avail
        if over < 0:
            widths[COL_SOURCE] += -over
        for col, width in widths.items():
            self.setColumnHidden(col, False)
            header.resizeSection(col, width)
        squeezed = [c for c in need if widths[c] < need[c]]
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if over > 0
                                          else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        header.setToolTip("Widen the panel to read every column whole (each row's tooltip "
                          "has it all)" if squeezed else "")

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.fit_columns()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        model = self.model()
        if model is not None and model.rowCount() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.viewport().rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "No steps yet.\nDrag a layer from a zoo model onto a layer of the "
                             "base model to add one.")
            painter.end()
