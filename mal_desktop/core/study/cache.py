"""The study's curve cache: a measured curve is kept under the sha256 of its two model files.

Zoo training and the measurements are deterministic (``core/zoo/pinned.py``), so a curve of the
same two files, layers and grid is the same record whenever it is measured: a rerun of the
study on a built zoo measures only what changed. The key covers the study version (bump it when
a measurement changes), the grid, epsilon, the evaluation data set and the weight-matching
restarts. Entries are small JSON files (NaN and infinities kept) written atomically; an entry
that cannot be read is measured again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io.files import atomic_write_text
from ..io.hashing import file_sha256
from .zoo import StudyZoo


class CurveCache:
    """Curve records by content key, in ``folder``; ``hits`` counts the records it served."""

    def __init__(self, folder: Path, zoo: StudyZoo, settings: Any, version: int) -> None:
        self.folder = Path(folder)
        self.zoo = zoo
        self.settings = settings
        self.version = version
        self.hits = 0
        self._sha: dict[str, str] = {}
        self._keys: dict[str, str] = {}

    def _file_hash(self, name: str) -> str:
        if name not in self._sha:
            self._sha[name] = file_sha256(self.zoo.models[name].path)
        return self._sha[name]

    def key(self, spec: Any) -> str:
        s = self.settings
        text = json.dumps([self.version, s.grid, s.epsilon, s.dataset, s.restarts,
                           self._file_hash(spec.base), self._file_hash(spec.target),
                           [list(p) for p in spec.layers]])
        k = hashlib.sha256(text.encode()).hexdigest()[:32]
        self._keys[spec.key] = k
        return k

    def get(self, spec: Any) -> dict[str, Any] | None:
        path = self.folder / f"{self.key(spec)}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != spec.key or "error" in record:
            return None
        self.hits += 1
        return record

    def put(self, curve_key: str, record: dict[str, Any]) -> None:
        if "error" in record or curve_key not in self._keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"{self._keys[curve_key]}.json",
                          json.dumps(record, allow_nan=True))
