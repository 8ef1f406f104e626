"""Sub-digit decoding, keypoint confidence, the flip test and the calibration (issue 20); the readings are the
codec's (locllm.codecs.reading), fed the distributions of decoded answers (value_steps)."""

import argparse

import numpy as np
import pytest
import torch

from locllm.codecs.reading import beam_values, keypoint_confidence, subdigit_values
from locllm.codecs.text import DecimalCodec, LocationTokenCodec
from locllm.engine import Localizer
from locllm.engine.decoding import DecodedAnswers
from locllm.engine.refinement import DecodingOptions, first_value_steps, fuse_flipped, value_steps
from locllm.models.calibration import Calibration
from locllm.models.modeling_base import checkpoint_weights_sha256


def answers_for(codec, steps_per_value: list[list[np.ndarray]]) -> DecodedAnswers:
    """DecodedAnswers holding only the chosen steps' distributions, value by value."""
    probs, values = [], []
    for value, steps in enumerate(steps_per_value):
        for step in steps:
            probs.append(torch.tensor(np.asarray(step, dtype=np.float32)))
            values.append(value)
    rows = len(probs[0])
    return DecodedAnswers([[]] * rows, torch.zeros(rows, codec.ndim), tuple(probs), tuple(values))


def one_hot(indices, n=10):
    return np.eye(n)[np.asarray(indices)]


@pytest.mark.parametrize("codec", [DecimalCodec(), DecimalCodec(ndim=3), LocationTokenCodec(num_bins=50)])
def test_one_hot_distributions_give_the_greedy_value(codec):
    rng = np.random.default_rng(0)
    steps, greedy = [], np.zeros((4, codec.ndim))
    for axis in range(codec.ndim):
        units = codec.unit_values(axis)
        chosen = [rng.integers(0, len(u), size=4) for u in units]
        steps.append([one_hot(c, len(u)) for c, u in zip(chosen, units, strict=True)])
        greedy[:, axis] = sum(u[c] for c, u in zip(chosen, units, strict=True))
    values = subdigit_values(value_steps(answers_for(codec, steps), codec.ndim), codec)
    np.testing.assert_allclose(values, greedy, atol=1e-12)
    answers = value_steps(answers_for(codec, steps), codec.ndim)  # one-hot: the runner-up branch weighs nothing
    np.testing.assert_allclose(beam_values(answers, answers, codec), greedy, atol=1e-12)
    texts = [codec.encode(codec.values_to_coordinates(v[None])[0]) for v in greedy]
    np.testing.assert_allclose(codec.values_to_coordinates(values), codec.decode_batch(texts)[0], atol=1e-9)


def test_subdigit_leans_towards_the_neighbour_the_model_also_believes():
    codec = DecimalCodec()
    first = np.zeros((1, 10))
    first[0, 4], first[0, 5] = 0.5, 0.5  # "0.4.." or "0.5..": the boundary between them is the best guess
    later = one_hot([0])  # given 4 the model writes 0.400
    steps = value_steps(answers_for(codec, [[first, later, later]] * 2), codec.ndim)
    value = subdigit_values(steps, codec)[0, 0]
    assert value == pytest.approx(0.5 * 0.4 + 0.5 * 0.5)
    assert keypoint_confidence(steps)[0] == pytest.approx(1.0)


def test_beam_takes_the_expectation_over_both_decoded_branches():
    codec = DecimalCodec()
    first = np.zeros((1, 10))
    first[0, 4], first[0, 7] = 0.75, 0.25
    greedy = answers_for(codec, [[first, one_hot([2]), one_hot([0])]] * 2)  # 0.420
    runner = answers_for(codec, [[first, one_hot([1]), one_hot([5])]] * 2)  # the 7 branch: 0.715
    assert first_value_steps(greedy) == {0, 3}
    assert beam_values(value_steps(greedy, 2), value_steps(runner, 2), codec)[0, 0] == pytest.approx(
        0.75 * 0.42 + 0.25 * 0.715)


def test_flip_of_a_mirror_consistent_answer_returns_the_same_answer():
    coords = np.array([[0.25, 0.5], [0.6, 0.1]])
    crop = 64
    mirrored = coords.copy()
    mirrored[:, 0] = (crop - 1) / crop - coords[:, 0]
    np.testing.assert_allclose(fuse_flipped(coords, np.array([0.9, 0.0]), mirrored, np.array([0.1, 0.0]), crop),
                               coords)
    shifted = mirrored + [0.1, 0.0]  # the mirrored pass lies 0.1 further right: back, that is 0.1 to the left
    fused = fuse_flipped(coords, np.ones(2), shifted, np.ones(2), crop)
    np.testing.assert_allclose(fused, coords - [0.05, 0.0])


def test_options_are_checked():
    with pytest.raises(ValueError, match="decode must be one of"):
        DecodingOptions(decode="mean")
    with pytest.raises(ValueError, match="score must be one of"):
        DecodingOptions(score="max")
    assert DecodingOptions().is_paper and not DecodingOptions(flip=True).is_paper


def test_calibration_fit_is_monotone_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.random(2000)
    hit = rng.random(2000) < raw ** 2  # over-confident raw scores
    calibration = Calibration.fit(raw, hit, {"about": "test"})
    assert np.all(np.diff(calibration.probability) >= 0) and np.all(np.diff(calibration.raw) > 0)
    assert calibration(0.5) == pytest.approx(0.25, abs=0.08)
    calibration.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert (loaded.raw, loaded.probability, loaded.about) == (calibration.raw, calibration.probability,
                                                              calibration.about)
    assert loaded.checkpoint_sha256 == checkpoint_weights_sha256(tmp_path)  # tied to the folder it was saved in
    assert Calibration.load(tmp_path / "nowhere") is None


def test_localizer_options(char_checkpoint):
    image = np.random.default_rng(3).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    localizer = Localizer.from_pretrained(char_checkpoint, device="cpu")
    paper = localizer.localize(image, keypoints=["left knee", "nose", "right knee"])[0]
    same = Localizer.from_pretrained(char_checkpoint, device="cpu", decoding=DecodingOptions()).localize(
        image, keypoints=["left knee", "nose", "right knee"])[0]
    np.testing.assert_array_equal(paper.keypoints, same.keypoints)
    np.testing.assert_array_equal(paper.scores, same.scores)
    for options in (DecodingOptions(decode="subdigit"), DecodingOptions(decode="beam"), DecodingOptions(flip=True),
                    DecodingOptions(decode="beam", flip=True)):
        localizer.answerer.options = options
        person = localizer.localize(image, keypoints=["left knee", "nose", "right knee"])[0]
        assert person.valid.all() and np.isfinite(person.keypoints).all()
        assert np.abs(person.keypoints - paper.keypoints).max() < 0.3 * max(image.shape)
    localizer.answerer.options = DecodingOptions(score="calibrated")
    with pytest.raises(ValueError, match="calibration.json"):
        localizer.localize(image, keypoints=["nose"])
    localizer.answerer.calibration = Calibration((0.0, 1.0), (0.2, 0.2))
    assert localizer.localize(image, keypoints=["nose"])[0].scores[0] == pytest.approx(0.2)
    reference = localizer.localize(image, keypoints=["nose"], mode="reference")[0]  # always the paper's reading
    assert reference.scores[0] != pytest.approx(0.2)


def test_the_cli_reads_with_the_library_s_recommended_decoding(char_checkpoint, tmp_path):
    from locllm.cli import decoding_args
    from locllm.engine import refinement
    from locllm.models import calibration

    # the parser spells these out (it must not load torch): they are the library's
    assert decoding_args.DECODES == refinement.DECODES and decoding_args.SCORES == refinement.SCORES
    assert decoding_args.DEFAULT_DECODE == refinement.RECOMMENDED_DECODE
    assert decoding_args.CALIBRATION_FILE == calibration.CALIBRATION_FILE
    assert refinement.recommended_decoding(char_checkpoint) == DecodingOptions(decode="subdigit", score="mean_max")
    (tmp_path / "calibration.json").write_text("{}")  # only whether it exists decides the default score
    assert refinement.recommended_decoding(tmp_path) == DecodingOptions(decode="subdigit", score="calibrated")
    assert refinement.recommended_decoding(tmp_path, decode="beam", flip=True, score="mean_max") == DecodingOptions(
        decode="beam", flip=True, score="mean_max")
    parser = argparse.ArgumentParser()  # the CLI without options reads the recommended way
    decoding_args.add_decoding_arguments(parser)
    assert decoding_args.decoding_options(parser.parse_args([]), tmp_path) == refinement.recommended_decoding(tmp_path)
    assert Localizer.from_pretrained(char_checkpoint, device="cpu").answerer.options == DecodingOptions()  # the paper's
