"""A cancel token that the user "presses" at its n-th look: proves a loop checks for Cancel
between its units of work (tensors, batches), not only once it is done."""

from __future__ import annotations

from mal_desktop.core.progress import CancelToken


class CancelAfter(CancelToken):
    """Cancelled at the ``n``-th ``raise_if_cancelled`` call (which then raises)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.looks = 0

    def raise_if_cancelled(self) -> None:
        self.looks += 1
        if self.looks == self.n:
            self.cancel()
        super().raise_if_cancelled()
