"""How fast mode reads its answers beyond the greedy text: the options, what the answers hand to the codec's
reading, and the flip test.

The readings themselves (sub-digit values, the beam's leaves, the keypoint confidence) belong to the text
codec: :mod:`locllm.codecs.reading`. Here:

- :class:`DecodingOptions`: ``decode="greedy"`` (the written digits), ``"subdigit"`` (an expectation around
  each value's first chosen unit) or ``"beam"`` (the runner-up first unit's branch really decoded: one more
  pass over all queries, every value's first step taking its runner-up); ``flip``; ``score="mean_max"`` or
  ``"calibrated"`` (the keypoint confidence through the checkpoint's calibration, :mod:`.calibration`).
- :func:`value_steps`: the distributions of the chosen steps of decoded answers, value by value, and
  :func:`first_value_steps`: the steps the beam's second pass takes its runner-up at.
- :func:`fuse_flipped`: the flip test's answers (the mirrored crop asked for each keypoint's flip partner),
  mirrored back and averaged with the original ones, weighted by confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..models.calibration import CALIBRATION_FILE
from .decoding import DecodedAnswers

DECODES = ("greedy", "subdigit", "beam")
SCORES = ("mean_max", "calibrated")
# The measured best at about the greedy cost on held-out SynthPose scenes (benchmarks/README.md, "Decoding
# options"): what the CLI reads with (recommended_decoding). The library's default stays the paper's reading.
RECOMMENDED_DECODE = "subdigit"


@dataclass(frozen=True)
class DecodingOptions:
    """How fast mode reads an answer. The defaults are the paper's reading (and ``reference`` mode's).

    Args:
        decode: ``greedy`` (the written digits), ``subdigit`` or ``beam`` (see the module docstring).
        flip: also ask the mirrored crop for each keypoint's flip partner and fuse (about 2x the cost).
        score: ``mean_max`` (the reference's: mean probability of the written digits) or ``calibrated``
            (the checkpoint's ``calibration.json`` over :func:`keypoint_confidence`); person scores are the
            mean of their keypoints' scores either way.
    """

    decode: str = "greedy"
    flip: bool = False
    score: str = "mean_max"

    def __post_init__(self):
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {self.decode!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")

    @property
    def is_paper(self) -> bool:
        """Whether this is the paper's reading, which reads nothing but the written text and its scores."""
        return self == DecodingOptions()

    def to_dict(self) -> dict:
        return asdict(self)


def recommended_decoding(checkpoint: str | Path, *, decode: str = RECOMMENDED_DECODE, flip: bool = False,
                         score: str | None = None) -> DecodingOptions:
    """The reading ``locllm predict``, ``eval`` and ``serve`` use unless told otherwise, for the checkpoint folder
    ``checkpoint``: sub-digit decoding, no flip test, and calibrated scores where the checkpoint has a
    ``calibration.json`` (else the reference's ``mean_max``); a ``score`` given wins. (``Localizer``'s own default,
    ``DecodingOptions()``, is the paper's reading: pass ``decoding=recommended_decoding(folder)`` for the CLI's.)"""
    if score is None:
        score = "calibrated" if (Path(checkpoint) / CALIBRATION_FILE).is_file() else "mean_max"
    return DecodingOptions(decode=decode, flip=flip, score=score)


def value_steps(decoded: DecodedAnswers, num_values: int) -> list[list[np.ndarray]]:
    """Per value, the (Q, allowed) distributions of the chosen steps that write it, in order: what the codec's
    reading (:mod:`locllm.codecs.reading`) weighs."""
    steps: list[list[np.ndarray]] = [[] for _ in range(num_values)]
    for probs, value in zip(decoded.choice_probs, decoded.choice_values, strict=True):
        if value < num_values:
            steps[value].append(probs.numpy())
    if not all(steps):
        raise ValueError("sub-digit decoding and confidences need grammar-constrained fast decoding "
                         "(TextAnswerer(constrained=True), mode='fast')")
    return steps


def first_value_steps(decoded: DecodedAnswers) -> frozenset[int]:
    """The chosen steps (indices among the choices) that write each value's first unit."""
    return frozenset(decoded.choice_values.index(v) for v in set(decoded.choice_values))


def fuse_flipped(coords: np.ndarray, weights: np.ndarray, flipped: np.ndarray, flipped_weights: np.ndarray,
                 crop_size: int) -> np.ndarray:
    """Fuse answers with the flip test's.

    Args:
        coords: (Q, ndim) normalized answers on the crop (depth, if any, in mm).
        weights: (Q,) their confidences.
        flipped: (Q, ndim) answers on the mirrored crop for each row's flip partner.
        flipped_weights: (Q,) their confidences.
        crop_size: S; crop pixel x mirrors to S - 1 - x (``data.geometry.flip_points``).

    Returns:
        (Q, ndim) the confidence-weighted mean of ``coords`` and the mirrored-back ``flipped`` (plain mean
        where both weights are 0).
    """
    back = flipped.copy()
    back[:, 0] = (crop_size - 1) / crop_size - flipped[:, 0]
    total = weights + flipped_weights
    share = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.5)[:, None]
    return share * coords + (1 - share) * back


__all__ = ["DECODES", "RECOMMENDED_DECODE", "SCORES", "DecodingOptions", "first_value_steps", "fuse_flipped",
           "recommended_decoding", "value_steps"]
