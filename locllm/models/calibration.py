"""A checkpoint's confidence calibration: raw keypoint confidence -> chance of lying within PCK@0.1.

Fitted once per checkpoint on held-out scenes (``locllm calibrate``, :mod:`locllm.apis.calibration`) by isotonic
regression (pool adjacent violators), stored beside the weights as ``calibration.json`` and applied by
piecewise-linear interpolation between the fitted knots.

The file records the checkpoint it was fitted for (:func:`~locllm.models.modeling_base.checkpoint_weights_sha256`
of the folder it is saved into); loading it beside other weights is refused, as is a table that is not a
calibration (values outside [0, 1], knots out of order, too many).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.outputs import write_text_atomically
from .modeling_base import checkpoint_weights_sha256

CALIBRATION_FILE = "calibration.json"
MAX_KNOTS = 100_000  # an isotonic fit has at most one knot per distinct confidence of its data


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw confidence to probability.

    ``raw`` (n,) increasing knots, ``probability`` (n,) non-decreasing values at them; ``about`` says what
    was fitted on what (feature, target, data).
    """

    raw: tuple[float, ...]
    probability: tuple[float, ...]
    about: dict = field(default_factory=dict)
    checkpoint_sha256: str | None = None  # the weights it was fitted for (set when saved into a checkpoint)

    def __post_init__(self):
        raw = np.asarray(self.raw, dtype=np.float64)
        probability = np.asarray(self.probability, dtype=np.float64)
        if raw.ndim != 1 or raw.shape != probability.shape or not 1 <= len(raw) <= MAX_KNOTS:
            raise ValueError(f"raw and probability must be two lists of the same length, 1 to {MAX_KNOTS:,} knots")
        if not (np.isfinite(raw).all() and np.isfinite(probability).all()):
            raise ValueError("raw and probability must be finite numbers")
        if (np.diff(raw) <= 0).any():
            raise ValueError("the raw confidences (knots) must increase strictly")
        if probability.min() < 0 or probability.max() > 1 or (np.diff(probability) < 0).any():
            raise ValueError("the probabilities must lie in [0, 1] and never decrease (an isotonic fit)")

    def __call__(self, confidence) -> np.ndarray:
        """(...) raw confidences -> (...) calibrated probabilities."""
        return np.interp(np.asarray(confidence, dtype=np.float64), self.raw, self.probability)

    @classmethod
    def fit(cls, confidence, hit, about: dict | None = None) -> Calibration:
        """Isotonic fit of ``hit`` (N,) bool on ``confidence`` (N,): each pooled block becomes one knot at its
        mean confidence."""
        order = np.argsort(confidence, kind="stable")
        x = np.asarray(confidence, dtype=np.float64)[order]
        y = np.asarray(hit, dtype=np.float64)[order]
        # Pool-adjacent-violators written here rather than scipy.optimize.isotonic_regression, which fits
        # point by point: the knots np.interp reads must be blocks with strictly increasing confidence, so
        # ties in confidence are pooled in the same pass.
        blocks: list[list[float]] = []  # [sum of x, sum of y, count]
        for xi, yi in zip(x, y, strict=True):
            blocks.append([xi, yi, 1.0])
            # pool while the fit would decrease, or two knots would share a confidence (ties)
            while len(blocks) > 1 and (blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]
                                       or blocks[-2][0] / blocks[-2][2] >= blocks[-1][0] / blocks[-1][2]):
                last = blocks.pop()
                blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
        raw = tuple(float(b[0] / b[2]) for b in blocks)
        probability = tuple(float(b[1] / b[2]) for b in blocks)
        return cls(raw, probability, about or {})

    def save(self, folder: str | Path) -> Path:
        """Write ``calibration.json`` into a checkpoint folder, tied to that checkpoint's weights."""
        tied = replace(self, checkpoint_sha256=checkpoint_weights_sha256(folder))
        return write_text_atomically(Path(folder) / CALIBRATION_FILE, json.dumps(asdict(tied), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        """The folder's calibration, or None when it has none; a damaged table, or one fitted for other
        weights, is a ValueError naming the file."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        fix = f"refit it (`locllm calibrate {Path(folder)} --data SCENES --overwrite`) or remove it"
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            about = table.get("about", {})
            if not isinstance(about, dict) or len(json.dumps(about)) > 10_000:
                raise ValueError("'about' must be a small mapping")
            calibration = cls(tuple(table["raw"]), tuple(table["probability"]), about, table.get("checkpoint_sha256"))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"{path} is not a calibration table ({type(err).__name__}: {err}): {fix}") from None
        weights = checkpoint_weights_sha256(folder)
        if calibration.checkpoint_sha256 != weights:
            fitted = calibration.checkpoint_sha256 or "no recorded checkpoint"
            raise ValueError(f"{path} was fitted for other weights ({str(fitted)[:20]}; these are {weights}): {fix}")
        return calibration


__all__ = ["CALIBRATION_FILE", "Calibration"]
