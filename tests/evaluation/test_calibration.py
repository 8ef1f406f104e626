"""ECE, reliability bins and the diagram on made-up data."""

import numpy as np
import pytest

from locllm.evaluation.calibration import (
    draw_reliability_diagram,
    expected_calibration_error,
    reliability_bins,
)


def test_calibrated_scores_have_small_ece_and_overconfident_ones_large():
    rng = np.random.default_rng(0)
    confidence = rng.random(20000)
    assert expected_calibration_error(confidence, rng.random(20000) < confidence) < 0.02
    assert expected_calibration_error(np.ones(10), np.arange(10) < 5) == pytest.approx(0.5)
    assert expected_calibration_error(np.full(4, 0.75), [True, True, True, False]) == pytest.approx(0.0)


def test_reliability_bins():
    mean_confidence, hit_rate, counts = reliability_bins([0.05, 0.15, 0.95, 1.0], [False, True, True, True], bins=10)
    assert counts.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert hit_rate[1] == 1.0 and np.isnan(hit_rate[5]) and mean_confidence[9] == pytest.approx(0.975)
    with pytest.raises(ValueError, match="must both be"):
        reliability_bins([0.5], [True, False])


def test_reliability_diagram_is_written(tmp_path):
    rng = np.random.default_rng(1)
    confidence = rng.random(500)
    path = draw_reliability_diagram({"a": (confidence, rng.random(500) < confidence)}, tmp_path / "r.png", "t")
    assert path.is_file() and path.stat().st_size > 1000
