"""Reading more than the greedy digits: sub-digit coordinates, a per-keypoint confidence, the flip test.

At every chosen step of a grammar-constrained answer the model gives a distribution over that step's
allowed units (the ten digits of ``0.ddd``, or the location tokens); the paper keeps only the argmax.

- ``decode="subdigit"``: each value is the expectation over the first chosen step's greedy unit and its two
  neighbours, each branch placed where it lies nearest the greedy one: the greedy branch at its own unit
  plus the expectation of the later steps (which the model computed given that branch), the lower
  neighbour at its highest completion (``d-1`` then ``.0995``: the boundary it shares with the greedy
  branch) and the upper one at its lowest (``d+1`` then zeros). On the demo checkpoint this beat plain
  expectations over the last one or two digits, whose conditional distributions put mass on far digits
  near a first-digit boundary. A one-hot distribution gives back the greedy value. Location tokens have
  one step per value: the expectation over the greedy bin and its neighbours.
- ``decode="beam"``: a beam of two over each value's first step: the runner-up first unit's branch is
  really decoded (one more pass over all queries, every value's first step taking its runner-up), and the
  value is the expectation over the two leaves, each its first unit plus the expected later steps given it.
- ``keypoint_confidence``: the probability mass of the first step's greedy unit and its neighbours (about
  +-0.1 of the crop, the PCK@0.1 radius), x times y: a raw confidence that a calibration
  (:mod:`.calibration`) maps to the chance of lying within PCK@0.1.
- ``fuse_flipped``: the flip test's answers (the mirrored crop asked for each keypoint's flip partner),
  mirrored back and averaged with the original ones, weighted by confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..codecs.text import CoordinateCodec, DecimalCodec, LocationTokenCodec
from .decoding import DecodedAnswers

DECODES = ("greedy", "subdigit", "beam")
SCORES = ("mean_max", "calibrated")


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


def unit_values(codec: CoordinateCodec, axis: int) -> list[np.ndarray]:
    """What each allowed unit adds to the normalized value, for every chosen step of value ``axis``, in order.

    ``[0.1 * arange(10), 0.01 * arange(10), 0.001 * arange(10)]`` for a 3-decimal value; one step of
    ``arange(num_bins) / num_bins`` for location tokens.
    """
    if isinstance(codec, DecimalCodec):
        decimals = codec.depth_decimals if axis == 2 else codec.decimals
        return [np.arange(10) * 10.0 ** -(place + 1) for place in range(decimals)]
    if isinstance(codec, LocationTokenCodec):
        return [np.arange(codec.num_bins) / codec.num_bins]
    raise ValueError(f"sub-digit decoding does not know the codec {type(codec).__name__}")


def _value_steps(decoded: DecodedAnswers, value: int) -> list[np.ndarray]:
    """The (Q, allowed) distributions of the steps that write ``value``, in order."""
    steps = [probs.numpy() for probs, v in zip(decoded.choice_probs, decoded.choice_values, strict=True) if v == value]
    if not steps:
        raise ValueError("sub-digit decoding and confidences need grammar-constrained fast decoding "
                         "(TextAnswerer(constrained=True), mode='fast')")
    return steps


def _first_step_branches(first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Q, n) first-step distribution -> greedy unit g (Q,) and the probabilities of g, g-1, g+1 (0 where
    the neighbour does not exist)."""
    g = first.argmax(axis=1)
    rows = np.arange(len(first))
    n = first.shape[1]
    lower = np.where(g > 0, first[rows, np.maximum(g - 1, 0)], 0.0)
    upper = np.where(g < n - 1, first[rows, np.minimum(g + 1, n - 1)], 0.0)
    return g, first[rows, g], lower, upper


def subdigit_values(decoded: DecodedAnswers, codec: CoordinateCodec) -> np.ndarray:
    """(Q, ndim) normalized values in [0, 1] read with the boundary-aware expectation of the module docstring."""
    values = np.zeros((len(decoded.token_ids), codec.ndim))
    for axis in range(codec.ndim):
        steps, units = _value_steps(decoded, axis), unit_values(codec, axis)
        g, p_greedy, p_lower, p_upper = _first_step_branches(steps[0])
        first_units = units[0]
        rest_mean = sum(probs @ u for probs, u in zip(steps[1:], units[1:], strict=True))
        rest_high = sum(u.max() for u in units[1:])  # the lower neighbour's completion nearest the greedy branch
        n = len(first_units)
        weighted = (p_greedy * (first_units[g] + rest_mean)
                    + p_lower * (first_units[np.maximum(g - 1, 0)] + rest_high)
                    + p_upper * first_units[np.minimum(g + 1, n - 1)])
        values[:, axis] = weighted / (p_greedy + p_lower + p_upper)
    return values


def first_value_steps(decoded: DecodedAnswers) -> frozenset[int]:
    """The chosen steps (indices among the choices) that write each value's first unit."""
    return frozenset(decoded.choice_values.index(v) for v in set(decoded.choice_values))


def beam_values(decoded: DecodedAnswers, runner_up: DecodedAnswers, codec: CoordinateCodec) -> np.ndarray:
    """(Q, ndim) normalized values: the expectation over two leaves per value, the greedy branch (``decoded``)
    and the runner-up first unit's (``runner_up``, decoded with :func:`first_value_steps` as runner-up steps),
    weighted by the greedy pass's first-step probabilities of the two units."""
    values = np.zeros((len(decoded.token_ids), codec.ndim))
    rows = np.arange(len(decoded.token_ids))
    for axis in range(codec.ndim):
        units = unit_values(codec, axis)
        leaves, weights = [], []
        for answers, rank in ((decoded, 1), (runner_up, 2)):
            steps = _value_steps(answers, axis)
            first = steps[0].argsort(axis=1)[:, -rank]  # the unit this pass wrote
            leaves.append(units[0][first] + sum(probs @ u for probs, u in zip(steps[1:], units[1:], strict=True)))
            weights.append(_value_steps(decoded, axis)[0][rows, first])
        values[:, axis] = (weights[0] * leaves[0] + weights[1] * leaves[1]) / (weights[0] + weights[1])
    return values


def values_to_coordinates(values: np.ndarray, codec: CoordinateCodec) -> np.ndarray:
    """(Q, ndim) normalized values -> the codec's coordinates (x, y as they are; z -> depth in mm, as
    ``CoordinateCodec.decode`` reads it)."""
    coords = values.copy()
    if codec.ndim == 3:
        coords[:, 2] = (values[:, 2] - 0.5) * codec.depth_range_mm
    return coords


def keypoint_confidence(decoded: DecodedAnswers) -> np.ndarray:
    """(Q,) the first-step probability mass of the greedy unit and its neighbours, x times y."""
    masses = [sum(_first_step_branches(_value_steps(decoded, axis)[0])[1:]) for axis in (0, 1)]
    return masses[0] * masses[1]


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


__all__ = ["DECODES", "SCORES", "DecodingOptions", "beam_values", "first_value_steps", "fuse_flipped", "keypoint_confidence", "subdigit_values",
           "unit_values", "values_to_coordinates"]
