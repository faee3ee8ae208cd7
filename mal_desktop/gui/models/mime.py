"""The private drag-and-drop payload for layers: a MIME type carrying JSON (never pickle).

A drag from a layer tree carries ``{"model": name, "role": "zoo"|"base", "layer": path,
"kind": kind, "shape": [..]}``; the drop side reads it back with :func:`decode_layer`, which
checks every field so a foreign or hand-made payload cannot crash the drop handler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QMimeData

LAYER_MIME = "application/x-mal-layer"
ROLES = ("zoo", "base")


@dataclass(frozen=True)
class LayerRef:
    """A dragged layer: which model it belongs to, in which role, and its path."""

    model: str
    role: str
    layer: str
    kind: str = ""
    shape: tuple[int, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "role": self.role, "layer": self.layer,
                "kind": self.kind, "shape": list(self.shape)}


def encode_layer(ref: LayerRef) -> QMimeData:
    """A ``QMimeData`` carrying ``ref`` as JSON under :data:`LAYER_MIME` plus a text fallback.

    The plain-text form ("model:layer") lets a user drop the reference into a text field.
    """
    mime = QMimeData()
    mime.setData(LAYER_MIME, json.dumps(ref.to_json(), sort_keys=True).encode("utf-8"))
    mime.setText(f"{ref.model}:{ref.layer}")
    return mime


def decode_layer(mime: QMimeData | None) -> LayerRef | None:
    """The :class:`LayerRef` in ``mime``, or None when it carries no valid layer payload."""
    if mime is None or not mime.hasFormat(LAYER_MIME):
        return None
    try:
        raw = json.loads(bytes(mime.data(LAYER_MIME).data()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    model, role, layer = raw.get("model"), raw.get("role"), raw.get("layer")
    if not (isinstance(model, str) and isinstance(layer, str) and role in ROLES):
        return None
    shape = raw.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
        shape = []
    kind = raw.get("kind", "")
    return LayerRef(model, str(role), layer, kind if isinstance(kind, str) else "", tuple(shape))
