"""Admission by memory: a budget of decoded pixels held by the images in flight, so what a pod takes
in depends on how big its images are once decoded, not on how many there are."""

from __future__ import annotations


class PixelBudget:
    """Decoded pixels reserved by the images in progress. Used on the event loop only (no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def try_acquire(self, pixels: int) -> bool:
        """Reserves `pixels` if they fit. An image bigger than the whole budget is still taken when
        nothing else is in flight, so every image under the pixel limit can be served."""
        if self.in_use and self.in_use + pixels > self.limit:
            return False
        self.in_use += pixels
        return True

    def release(self, pixels: int) -> None:
        self.in_use -= pixels
