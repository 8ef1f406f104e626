"""Reading a text answer beyond its greedy characters: sub-digit values, the beam's two leaves, a keypoint
confidence and the scores of the written values. Everything about reading the text codecs' answers lives
here, beside them (MMPose's codecs own their decode-time refinement); the answerer only hands over what
the model said.

At every chosen step of a grammar-constrained answer the model gives a distribution over that step's
allowed units (the ten digits of ``0.ddd``, or the location tokens); the paper keeps only the argmax.
``steps`` below is, per value (x, y, z), the (Q, allowed) distributions of the steps that write it, in
order; what each unit adds to the value is the codec's :meth:`~.text.CoordinateCodec.unit_values`.

- :func:`subdigit_values`: each value is the expectation over the first chosen step's greedy unit and its
  two neighbours, each branch placed where it lies nearest the greedy one: the greedy branch at its own unit
  plus the expectation of the later steps (which the model computed given that branch), the lower
  neighbour at its highest completion (``d-1`` then ``.0995``: the boundary it shares with the greedy
  branch) and the upper one at its lowest (``d+1`` then zeros). On the demo checkpoint this beat plain
  expectations over the last one or two digits, whose conditional distributions put mass on far digits
  near a first-digit boundary. A one-hot distribution gives back the greedy value. Location tokens have
  one step per value: the expectation over the greedy bin and its neighbours.
- :func:`beam_values`: a beam of two over each value's first step: the runner-up first unit's branch is
  really decoded (by the answerer), and the value is the expectation over the two leaves, each its first
  unit plus the expected later steps given it.
- :func:`keypoint_confidence`: the probability mass of the first step's greedy unit and its neighbours
  (about +-0.1 of the crop, the PCK@0.1 radius), x times y: a raw confidence that a calibration maps to
  the chance of lying within PCK@0.1.
- :func:`span_scores`: the reference's score of each written value, the mean probability of the tokens
  that wrote it (by character span), for answers decoded without the grammar.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .text import CoordinateCodec

Steps = Sequence[Sequence[np.ndarray]]  # per value, its steps' (Q, allowed) distributions in order


def _first_step_branches(first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Q, n) first-step distribution -> greedy unit g (Q,) and the probabilities of g, g-1, g+1 (0 where
    the neighbour does not exist)."""
    g = first.argmax(axis=1)
    rows = np.arange(len(first))
    n = first.shape[1]
    lower = np.where(g > 0, first[rows, np.maximum(g - 1, 0)], 0.0)
    upper = np.where(g < n - 1, first[rows, np.minimum(g + 1, n - 1)], 0.0)
    return g, first[rows, g], lower, upper


def subdigit_values(steps: Steps, codec: CoordinateCodec) -> np.ndarray:
    """(Q, ndim) normalized values in [0, 1] read with the boundary-aware expectation of the module docstring."""
    values = np.zeros((len(steps[0][0]), codec.ndim))
    for axis in range(codec.ndim):
        value_steps, units = steps[axis], codec.unit_values(axis)
        g, p_greedy, p_lower, p_upper = _first_step_branches(value_steps[0])
        first_units = units[0]
        rest_mean = sum(probs @ u for probs, u in zip(value_steps[1:], units[1:], strict=True))
        rest_high = sum(u.max() for u in units[1:])  # the lower neighbour's completion nearest the greedy branch
        n = len(first_units)
        weighted = (p_greedy * (first_units[g] + rest_mean)
                    + p_lower * (first_units[np.maximum(g - 1, 0)] + rest_high)
                    + p_upper * first_units[np.minimum(g + 1, n - 1)])
        values[:, axis] = weighted / (p_greedy + p_lower + p_upper)
    return values


def beam_values(greedy: Steps, runner_up: Steps, codec: CoordinateCodec) -> np.ndarray:
    """(Q, ndim) normalized values: the expectation over two leaves per value, the greedy branch's steps
    (``greedy``) and those of the branch that took the runner-up first unit (``runner_up``), weighted by the
    greedy pass's first-step probabilities of the two units."""
    values = np.zeros((len(greedy[0][0]), codec.ndim))
    rows = np.arange(len(greedy[0][0]))
    for axis in range(codec.ndim):
        units = codec.unit_values(axis)
        leaves, weights = [], []
        for branch, rank in ((greedy, 1), (runner_up, 2)):
            value_steps = branch[axis]
            first = value_steps[0].argsort(axis=1)[:, -rank]  # the unit this branch wrote
            leaves.append(units[0][first] + sum(probs @ u for probs, u in zip(value_steps[1:], units[1:], strict=True)))
            weights.append(greedy[axis][0][rows, first])
        values[:, axis] = (weights[0] * leaves[0] + weights[1] * leaves[1]) / (weights[0] + weights[1])
    return values


def keypoint_confidence(steps: Steps) -> np.ndarray:
    """(Q,) the first-step probability mass of the greedy unit and its neighbours, x times y."""
    masses = [sum(_first_step_branches(steps[axis][0])[1:]) for axis in (0, 1)]
    return masses[0] * masses[1]


def span_scores(codec: CoordinateCodec, text: str, token_ends: Sequence[int], token_probs: Sequence[float]) -> np.ndarray:
    """(ndim,) per value written in ``text``, the mean probability of the tokens whose characters overlap it
    (NaN for a value not written). ``token_ends``: where each token's text ends in ``text``; ``token_probs``:
    the probability the model gave each token."""
    scores = np.full(codec.ndim, np.nan)
    starts = [0, *token_ends[:-1]]
    for v, (start, end) in enumerate(codec.value_spans(text)):
        picked = [float(token_probs[t]) for t in range(len(token_ends)) if starts[t] < end and token_ends[t] > start]
        scores[v] = float(np.mean(picked)) if picked else np.nan
    return scores


__all__ = ["beam_values", "keypoint_confidence", "span_scores", "subdigit_values"]
