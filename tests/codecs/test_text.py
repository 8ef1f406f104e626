"""Coordinates <-> answer text: round trips, exact strings, strict parsing, supervision pieces, grammar."""

import math
import re

import numpy as np
import pytest

from locllm.codecs import CODECS, DecimalCodec, LocationTokenCodec, build_codec

MALFORMED_2D = [
    "",
    "no keypoint",
    "[0.412]",  # one number
    "[0.412,0.655,0.500]",  # three numbers for a 2D question
    "[0.412,0.655",  # cut off before the bracket closes
    "0.412,0.655]",
    "0.3296 0.5363",  # no brackets
    "[-0.100,0.223]",  # a sign
    "[0.100,-0.223]",
    "[10.500,0.250]",  # two digits before the point
    "[1.500,0.250]",  # above 1
    "[.469,.078]",  # no digit before the point
    "[0.,0.5]",  # no digit after the point
    "[0.4, 0.4]",  # a space inside
    "[0.4,0.4] and more",  # text after the answer
    "[0.412,0.655]</s>",  # an EOS the caller did not strip
    "[0\u200b.4,0.4]",
    "[\u0660.4,0.4]",  # an Arabic-Indic zero: a digit to Python's \d, not to us
    "[0.4e1,0.4]",
    "[0x1,0.4]",
]


@pytest.mark.parametrize("coords, text", [
    ([0.4123, 0.6551], "[0.412,0.655]"),
    ([0.0, 0.0], "[0.000,0.000]"),
    ([1.0, 0.999], "[1.000,0.999]"),
    ([0.99961, 0.5], "[1.000,0.500]"),  # rounds up to 1.000, which still reads back as valid
])
def test_decimal_2d_exact_strings(coords, text):
    codec = DecimalCodec()
    assert codec.encode(coords) == text
    decoded, valid = codec.decode(text)
    assert valid
    np.testing.assert_allclose(decoded, [float(v) for v in text[1:-1].split(",")])


def test_decimal_3d_exact_strings_and_depth_in_millimetres():
    codec = DecimalCodec(ndim=3)
    assert codec.encode([0.412, 0.655, 6.25]) == "[0.412,0.655,0.503125]"  # 6.25 / 2000 + 0.5
    assert codec.encode([0.5, 0.5, -1000.0]) == "[0.500,0.500,0.000000]"
    assert codec.encode([0.5, 0.5, 1000.0]) == "[0.500,0.500,1.000000]"
    decoded, valid = codec.decode("[0.412,0.655,0.503125]")
    assert valid
    np.testing.assert_allclose(decoded, [0.412, 0.655, 6.25], atol=1e-9)


def test_float32_inputs_round_like_the_reference_format():
    # The reference formats float32 values with "{:.3f}"; we must produce the same digits from the same values.
    rng = np.random.default_rng(0)
    values = (rng.uniform(0, 224, size=(500, 2)).astype(np.float32) / np.float32(224)).astype(np.float32)
    codec = DecimalCodec()
    for x, y in values:
        assert codec.encode([x, y]) == f"[{x:.3f},{y:.3f}]"


@pytest.mark.parametrize("ndim", [2, 3])
def test_decimal_round_trip(ndim):
    rng = np.random.default_rng(ndim)
    codec = DecimalCodec(ndim=ndim)
    points = rng.uniform(0, 1, size=(200, ndim))
    if ndim == 3:
        points[:, 2] = rng.uniform(-1000, 1000, size=200)
    texts = [codec.encode(p) for p in points]
    decoded, valid = codec.decode_batch(texts)
    assert decoded.shape == (200, ndim) and valid.shape == (200,) and valid.all()
    np.testing.assert_allclose(decoded[:, :2], points[:, :2], atol=0.5e-3 + 1e-12)
    if ndim == 3:
        np.testing.assert_allclose(decoded[:, 2], points[:, 2], atol=0.5e-6 * 2000 + 1e-9)


@pytest.mark.parametrize("text", MALFORMED_2D)
def test_malformed_2d_answers_are_invalid_never_raise(text):
    coords, valid = DecimalCodec().decode(text)
    assert valid is False
    assert coords.shape == (2,) and np.isnan(coords).all()


@pytest.mark.parametrize("text", ["[0.412,0.655]", "[0.4,0.5,0.6,0.7]", "[0.4,0.5,1.6]", "[0.4,0.5,-0.6]", "nothing"])
def test_malformed_3d_answers_are_invalid(text):
    # A two-number answer crashes the reference's 3D evaluation (IndexError); here it is just invalid.
    coords, valid = DecimalCodec(ndim=3).decode(text)
    assert not valid and coords.shape == (3,) and np.isnan(coords).all()


@pytest.mark.parametrize("not_text", [None, 0.5, b"[0.4,0.4]", ["[0.4,0.4]"]])
def test_decode_of_non_strings_is_invalid(not_text):
    coords, valid = DecimalCodec().decode(not_text)
    assert not valid and np.isnan(coords).all()


@pytest.mark.parametrize("text, expected", [(" [0.412,0.655]", [0.412, 0.655]), ("[0.412,0.655]\n", [0.412, 0.655]),
                                            ("\t[0.4120,0.65]  ", [0.412, 0.65]), ("[0.5,0.5]", [0.5, 0.5])])
def test_decode_tolerates_surrounding_whitespace_and_any_number_of_decimals(text, expected):
    coords, valid = DecimalCodec().decode(text)
    assert valid
    np.testing.assert_allclose(coords, expected)


def test_decode_batch_marks_each_answer():
    coords, valid = DecimalCodec().decode_batch(["[0.1,0.2]", "oops", "[0.3,0.4]"])
    assert valid.tolist() == [True, False, True]
    np.testing.assert_allclose(coords[[0, 2]], [[0.1, 0.2], [0.3, 0.4]])
    assert np.isnan(coords[1]).all()


@pytest.mark.parametrize("coords", [[-0.001, 0.5], [0.5, 1.001], [math.nan, 0.5], [math.inf, 0.5], [0.5]])
def test_encode_refuses_points_outside_the_crop(coords):
    with pytest.raises(ValueError):
        DecimalCodec().encode(coords)


@pytest.mark.parametrize("depth", [1000.5, -1000.5, math.inf])
def test_encode_refuses_depth_beyond_the_range(depth):
    with pytest.raises(ValueError, match="z="):
        DecimalCodec(ndim=3).encode([0.5, 0.5, depth])


def test_answer_pieces_2d_is_one_supervised_piece():
    assert DecimalCodec().answer_pieces([0.57, 0.771]) == [("[0.570,0.771]", True)]


def test_answer_pieces_3d_supervision_of_depth():
    codec = DecimalCodec(ndim=3)
    known = [0.412, 0.655, 6.25]
    unknown = [0.412, 0.655, math.nan]
    assert codec.answer_pieces(known) == [("[0.412,0.655,0.503125]", True)]
    # Depth-less samples (MPII in mixed 3D training): the reference's filler z = 0, not supervised ...
    assert codec.answer_pieces(unknown) == [("[0.412,0.655,", True), ("0.000000", False), ("]", True)]
    # ... unless asked to, which is what the reference does.
    assert codec.answer_pieces(unknown, supervise_depth=True) == [("[0.412,0.655,0.000000]", True)]
    assert codec.answer_pieces(known, supervise_depth=False) == [
        ("[0.412,0.655,", True), ("0.503125", False), ("]", True)]
    assert codec.encode(unknown) == "[0.412,0.655,0.000000]"


@pytest.mark.parametrize("codec", [DecimalCodec(), DecimalCodec(ndim=3), DecimalCodec(decimals=2),
                                   LocationTokenCodec(num_bins=50), LocationTokenCodec(num_bins=20, ndim=3)])
def test_grammar_accepts_every_answer_and_only_valid_ones(codec):
    grammar = codec.answer_grammar()
    assert grammar[0] == ["["] and grammar[-1] == ["]"]
    rng = np.random.default_rng(1)
    for _ in range(50):
        point = rng.uniform(0, 0.99, size=codec.ndim)  # values that round up to 1 are outside the grammar
        if codec.ndim == 3:
            point[2] = rng.uniform(-999, 999)
        units = _units(codec.encode(point))
        assert len(units) == len(grammar)
        assert all(unit in allowed for unit, allowed in zip(units, grammar, strict=True))
        # a random walk through the grammar is always a valid answer
        walk = "".join(allowed[rng.integers(len(allowed))] for allowed in grammar)
        assert codec.decode(walk)[1], walk


def _units(text):
    """An answer's units: whole <...> tokens and single characters."""
    return re.findall(r"<[^<>]+>|.", text)


def test_location_tokens():
    codec = LocationTokenCodec(num_bins=1000)
    tokens = codec.new_tokens()
    assert len(tokens) == 1000 and tokens[0] == "<loc_0000>" and tokens[-1] == "<loc_0999>"
    assert codec.encode([0.412, 0.655]) == "[<loc_0412><loc_0655>]"
    assert codec.encode([1.0, 0.0]) == "[<loc_0999><loc_0000>]"  # 1.0 falls into the last bin
    coords, valid = codec.decode(" [<loc_0412><loc_0655>]")
    assert valid
    np.testing.assert_allclose(coords, [0.412, 0.655])


def test_location_tokens_round_trip_and_3d():
    codec = LocationTokenCodec(num_bins=100, ndim=3)
    rng = np.random.default_rng(2)
    points = np.column_stack([rng.uniform(0, 0.99, (100, 2)), rng.uniform(-990, 990, 100)])
    coords, valid = codec.decode_batch([codec.encode(p) for p in points])
    assert valid.all()
    np.testing.assert_allclose(coords[:, :2], points[:, :2], atol=0.5 / 100 + 1e-12)
    np.testing.assert_allclose(coords[:, 2], points[:, 2], atol=0.5 / 100 * 2000 + 1e-9)
    assert codec.answer_pieces([0.5, 0.5, math.nan]) == [("[<loc_0050><loc_0050>", True), ("<loc_0000>", False),
                                                         ("]", True)]


@pytest.mark.parametrize("text", ["[<loc_0100><loc_0005>]", "[<loc_0005>]", "<loc_0005><loc_0005>",
                                  "[<loc_0005>,<loc_0005>]", "[<loc_005><loc_0005>]", "[0.412,0.655]"])
def test_location_tokens_malformed(text):
    coords, valid = LocationTokenCodec(num_bins=100).decode(text)
    assert not valid and np.isnan(coords).all()


@pytest.mark.parametrize("codec", [DecimalCodec(ndim=3, decimals=4, depth_decimals=5, depth_range_mm=3000.0),
                                   LocationTokenCodec(num_bins=256, ndim=3)])
def test_codec_config_round_trip(codec):
    config = codec.to_dict()
    assert config["type"] in CODECS
    rebuilt = build_codec(config)
    assert type(rebuilt) is type(codec) and rebuilt.to_dict() == config
    assert rebuilt.encode([0.25, 0.75, 100.0]) == codec.encode([0.25, 0.75, 100.0])


@pytest.mark.parametrize("bad", [lambda: DecimalCodec(ndim=1), lambda: DecimalCodec(decimals=0),
                                 lambda: DecimalCodec(ndim=3, depth_range_mm=0), lambda: LocationTokenCodec(1),
                                 lambda: LocationTokenCodec(10001), lambda: build_codec({"type": "words"})])
def test_invalid_configurations(bad):
    with pytest.raises(ValueError):
        bad()
