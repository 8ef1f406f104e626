"""`locllm bench` on the tiny config: both modes timed on one model, and what each mode costs measured."""

import json

import pytest

from locllm.cli import main


def test_bench_runs_both_modes_and_measures_what_each_costs(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", "tiny", "--persons", "2", "--repeats", "1", "--device", "cpu",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["reference_ms_per_person"] > 0 and result["fast_ms_per_person"] > 0
    assert result["speedup"] == pytest.approx(result["reference_ms_per_person"] / result["fast_ms_per_person"])
    assert result["identical_answers_unconstrained"] == 1.0  # fp32: the two paths agree token for token
    # the reference re-encodes its 17 copies at every step (prefill + up to 13 more); fast encodes each crop once
    assert result["reference_vision_images_per_person"] > 17 and result["reference_vision_images_per_person"] % 17 == 0
    assert result["fast_vision_images_per_person"] == 1
    # the reference caches 17 padded prompts per person, each with the image prefix; the fast path the
    # prefix once (tiny's prefix is 16 image tokens: the gap grows with the image, 4x on the paper's)
    assert 0 < result["fast_kv_cache_mib_per_person"] < result["reference_kv_cache_mib_per_person"]


@pytest.mark.parametrize("option, value", [("--persons", "0"), ("--repeats", "-1"), ("--base-layers", "0"),
                                           ("--persons", "two")])
def test_a_count_below_one_is_one_line_before_any_work(option, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--config", "tiny", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err
