"""A checkpoint's confidence calibration: raw keypoint confidence -> chance of lying within PCK@0.1.

Fitted once per checkpoint on held-out scenes (``benchmarks/decoding_options.py --fit``) by isotonic
regression (pool adjacent violators), stored beside the weights as ``calibration.json`` and applied by
piecewise-linear interpolation between the fitted knots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw confidence to probability.

    ``raw`` (n,) increasing knots, ``probability`` (n,) non-decreasing values at them; ``about`` says what
    was fitted on what (feature, target, data).
    """

    raw: tuple[float, ...]
    probability: tuple[float, ...]
    about: dict = field(default_factory=dict)

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
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        """The folder's calibration, or None when it has none."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            table = json.loads(path.read_text())
            return cls(tuple(table["raw"]), tuple(table["probability"]), table.get("about", {}))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a calibration table ({type(err).__name__}: {err}): refit it "
                             "(benchmarks/decoding_options.py --fit) or remove it") from None


__all__ = ["CALIBRATION_FILE", "Calibration"]
