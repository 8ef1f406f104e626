"""The contract every codec keeps (MMPose's: ``encode(keypoints, visible)`` / ``decode(encoded)``)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class KeypointCodec(ABC):
    """Keypoint coordinates of a crop <-> what a model emits for them.

    ``ndim``: coordinates per keypoint (2: x, y; 3: x, y, depth), as the evaluation asks of every
    localizer's codec. Subclasses document their shapes and units.
    """

    ndim: int

    @abstractmethod
    def encode(self, *args, **kwargs):
        """Coordinates -> the model's target for them."""

    @abstractmethod
    def decode(self, encoded):
        """The model's output -> ``(coords, scores)``: coordinates, NaN where nothing can be read, and
        a score per keypoint (text: whether the answer parsed; heatmaps: the peak value)."""
