"""The text codec's own reading of an answer: the spans of its values and their scores."""

import numpy as np
import pytest

from locllm.codecs.reading import span_scores
from locllm.codecs.text import DecimalCodec, LocationTokenCodec


def test_value_spans_are_the_written_values():
    assert DecimalCodec().value_spans("[0.412,0.655]") == [(1, 6), (7, 12)]
    assert LocationTokenCodec(num_bins=50).value_spans("[<loc_0012><loc_0040>]") == [(1, 11), (11, 21)]
    assert DecimalCodec().value_spans("[0.41,0.5,0.7]") == [(1, 5), (6, 9)]  # the first ndim only
    assert DecimalCodec(ndim=3).value_spans("no numbers") == []


def test_span_scores_average_the_tokens_that_wrote_each_value():
    text = "[0.4,0.6]"
    ends = [1, 3, 4, 5, 7, 8, 9]  # "[", "0.", "4", ",", "0.", "6", "]"
    probs = [1.0, 0.9, 0.5, 1.0, 0.8, 0.2, 1.0]
    np.testing.assert_allclose(span_scores(DecimalCodec(), text, ends, probs), [0.7, 0.5])
    only_x = span_scores(DecimalCodec(), "[0.4]", [1, 3, 4, 5], [1.0, 0.9, 0.5, 1.0])
    assert only_x[0] == pytest.approx(0.7) and np.isnan(only_x[1])
