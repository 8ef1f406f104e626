"""Codecs: keypoint coordinates <-> what a model emits for them, one small class per format.

Every codec follows MMPose's contract (:class:`~.base.KeypointCodec`):

    encode(...)         coordinates of a crop -> the model's target (answer text, heatmaps)
    decode(encoded)     the model's output -> (coords, scores); coords NaN where nothing can be read

- :mod:`.text`: LocLLM's answers. ``DecimalCodec`` writes ``[0.412,0.655]``, ``LocationTokenCodec``
  ``[<loc_0412><loc_0655>]``; coordinates are normalized to the crop, one answer per keypoint:
  ``decode(text) -> ((ndim,), valid)``; ``decode_batch`` reads Q answers. :mod:`.reading` reads more
  from the model's distributions over an answer's units (sub-digit values, the beam's two leaves, a
  keypoint confidence, the scores of the written values).
- :mod:`.heatmap`: the CLIP baseline's Gaussian heatmaps, in crop pixels, Q keypoints at once:
  ``encode((Q, 2), (Q,)) -> ((Q, H, H), (Q,))``, ``decode((Q, H, W)) -> ((Q, 2), (Q,))``.

A new format is a new module here with a :class:`~.base.KeypointCodec` subclass.
"""

from .base import KeypointCodec
from .heatmap import HeatmapCodec
from .text import ANSWER_OPEN, CODECS, CoordinateCodec, DecimalCodec, LocationTokenCodec, build_codec

__all__ = ["ANSWER_OPEN", "CODECS", "CoordinateCodec", "DecimalCodec", "HeatmapCodec", "KeypointCodec",
           "LocationTokenCodec", "build_codec"]
