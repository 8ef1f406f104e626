"""The novel-keypoint experiment's criteria, stated before any run and printed with every result.

A run reads its held-out figures only when its arms have learnt the types they were trained on
(the competence gate); otherwise it is inconclusive, whichever way its held-out figures point.

Every interval is a 95 % percentile interval of a crop bootstrap (crops resampled with replacement,
the same resample for every column compared, 2,000 resamples, seed 0), so a difference is paired.
PCK@0.1 counts a labelled keypoint as found within 0.1 of the crop side. No AP at 64 px: COCO's OKS
scales with the person's area, which leaves a 64 px crop almost no tolerance.
"""

from __future__ import annotations

import numpy as np

GATE_MARGIN = 0.15  # each arm's seen PCK@0.1 at least this far above the floor
PRIMARY_MARGIN = 0.05  # A above the floor and above B on the extras, by at least this much
RESAMPLES = 2000
VALIDATION_CROPS = 500
CURVE_CROPS = 100

CRITERIA = f"""Pre-registered criteria (stated before the run):
- Competence gate: each arm's seen-type PCK@0.1 >= floor + {GATE_MARGIN} with its 95 % crop-bootstrap interval
  above the floor. An arm that misses it makes the run inconclusive; its held-out figures are not read.
- Primary (read only past the gate): on the six extra types, asked by name only and asked with their
  description (both reported), A - floor >= {PRIMARY_MARGIN} and A - B >= {PRIMARY_MARGIN}, both intervals excluding 0.
- The held-out four are reported the same way; they are compositions of seen words and are not expected
  to separate A from B.
- Controls: A with shuffled images (each crop asked about another crop's picture) must fall to the floor;
  the floors are the image-blind mean pose and, for a held-out type, its left/right partner's mean.
- {VALIDATION_CROPS} validation crops; every checkpoint of the learning curve scored on the same first {CURVE_CROPS}
  crops; PCK only, no AP at 64 px."""

PILOT_MINIMUM_PCK = 0.50
PILOT_MINIMUM_FIRST_DECIMAL_GAIN = 0.1  # nats
PILOT_GATE = f"""Pilot gate (stated before the run): go on to the A/B main run only if, for one learning rate,
arm A's seen-type PCK@0.1 on the first {CURVE_CROPS} validation crops is >= {PILOT_MINIMUM_PCK} and its first-decimal
loss there is >= {PILOT_MINIMUM_FIRST_DECIMAL_GAIN} nats below the image-blind value; otherwise the premise test follows."""


def pck_hits(predicted: np.ndarray, truth: np.ndarray, labelled: np.ndarray, side: float,
             threshold: float = 0.1) -> np.ndarray:
    """(M, K) 1.0 where a labelled keypoint's answer lies within ``threshold * side`` of it, 0.0 where it
    does not (unparsed answers, NaN, are misses), NaN where the keypoint is not labelled."""
    distance = np.linalg.norm(predicted - truth, axis=-1)
    hits = (distance <= threshold * side).astype(np.float64)  # NaN distances compare false: a miss
    return np.where(labelled, hits, np.nan)


def _resamples(num_crops: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, num_crops, (RESAMPLES, num_crops))


def _pck_of(hits: np.ndarray, columns: list[int], rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """PCK over the chosen crops (rows may be a (R, M) resample) and keypoint columns."""
    chosen = hits[rows][..., columns]
    return np.nansum(chosen, axis=(-2, -1)) / np.maximum(np.sum(~np.isnan(chosen), axis=(-2, -1)), 1)


def pck_with_interval(hits: np.ndarray, columns: list[int]) -> dict:
    """PCK of ``columns`` and its 95 % crop-bootstrap interval."""
    boot = _pck_of(hits, columns, _resamples(len(hits)))
    return {"pck@0.1": round(float(_pck_of(hits, columns)), 4),
            "interval": [round(float(v), 4) for v in np.percentile(boot, [2.5, 97.5])]}


def difference_with_interval(hits: np.ndarray, other: np.ndarray, columns: list[int]) -> dict:
    """PCK(hits) - PCK(other) on the same crops, with its paired 95 % crop-bootstrap interval."""
    rows = _resamples(len(hits))
    boot = _pck_of(hits, columns, rows) - _pck_of(other, columns, rows)
    return {"difference": round(float(_pck_of(hits, columns) - _pck_of(other, columns)), 4),
            "interval": [round(float(v), 4) for v in np.percentile(boot, [2.5, 97.5])]}


def competence_gate(arm_hits: np.ndarray, floor_hits: np.ndarray, seen: list[int]) -> dict:
    """Does the arm pass the gate: seen PCK >= floor + margin, and the interval of (arm - floor) above 0?"""
    arm = pck_with_interval(arm_hits, seen)
    versus_floor = difference_with_interval(arm_hits, floor_hits, seen)
    floor = float(_pck_of(floor_hits, seen))
    passed = arm["pck@0.1"] >= floor + GATE_MARGIN and versus_floor["interval"][0] > 0
    return {"seen": arm, "floor": round(floor, 4), "minus_floor": versus_floor, "passed": bool(passed)}


def primary_criterion(a_hits: np.ndarray, b_hits: np.ndarray, floor_hits: np.ndarray, columns: list[int]) -> dict:
    """A - floor and A - B on ``columns``, each >= the margin with its interval excluding 0."""
    over_floor = difference_with_interval(a_hits, floor_hits, columns)
    over_b = difference_with_interval(a_hits, b_hits, columns)
    met = all(d["difference"] >= PRIMARY_MARGIN and d["interval"][0] > 0 for d in (over_floor, over_b))
    return {"A_minus_floor": over_floor, "A_minus_B": over_b, "met": bool(met)}
