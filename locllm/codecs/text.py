"""Coordinates <-> answer text: the codecs that turn a keypoint location into what the LLM says.

A codec writes one keypoint's normalized crop coordinates as the answer text of one round and
reads generated text back. Every answer has the same shape, ``[`` value, value, ... ``]``:

- :class:`DecimalCodec` (the paper's format): ``[0.412,0.655]`` in 2D, ``[0.412,0.655,0.503125]``
  in 3D. Llama-style tokenizers split it into one token per character, so no new vocabulary is needed.
- :class:`LocationTokenCodec` (the paper's ablation): one added token per value, ``[<loc_0412><loc_0655>]``;
  the tokenizer and the model's embeddings must be extended with :meth:`LocationTokenCodec.new_tokens`.

Conventions (both codecs):

- x and y are crop pixel coordinates divided by the crop size: ``[0, 1)`` for a point inside the crop.
- In 3D the third value is the root-relative depth in millimetres; the text holds
  ``z = depth / depth_range_mm + 0.5`` (the reference's ``depth / 2000 + 0.5``), which must lie in ``[0, 1]``.
- A 3D sample whose depth is unknown (2D data such as MPII in mixed 3D training) passes NaN as depth.
  The text then holds the reference's filler ``z = 0`` so that prompts stay token-identical with it, and
  :meth:`answer_pieces` leaves those characters unsupervised unless asked otherwise.
- ``decode`` is strict and never raises: anything but exactly ``ndim`` well-formed values inside
  ``[...]`` (surrounding whitespace allowed) is invalid and gives NaN coordinates.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from ..bounds import check_range
from .base import KeypointCodec

ANSWER_OPEN = "["  # every answer of every codec starts with this unit; PromptBuilder relies on it
ANSWER_CLOSE = "]"
# Where the values lie in any answer text, also a malformed one (reference mode writes free text): the
# reference's pattern, shared by both codecs, so that scores read the same spans it does.
VALUE_TEXT = re.compile(r"\d+\.\d+|<loc_\d+>")
DIGITS = "0123456789"
UNKNOWN_DEPTH_FILLER_Z = 0.0  # what the reference writes as depth for samples without one


class CoordinateCodec(KeypointCodec):
    """Shared logic: value normalization, answer layout, supervision pieces, strict parsing.

    Subclasses say how one normalized value in ``[0, 1]`` is written (``_format_value``), what a
    written value looks like (``_value_pattern``), how it is read back (``_parse_value``), which
    units may appear in each position (``_value_grammar``) and what separates values (``value_separator``).
    """

    value_separator = ""

    def __init__(self, ndim: int = 2, depth_range_mm: float = 2000.0):
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 (x, y) or 3 (x, y, depth), got {ndim}")
        check_range("depth_range_mm", depth_range_mm, 1e-3, 1e6, integer=False)
        self.ndim = ndim
        self.depth_range_mm = float(depth_range_mm)
        values = [f"({self._value_pattern(axis)})" for axis in range(ndim)]
        self._answer_regex = re.compile(
            re.escape(ANSWER_OPEN) + re.escape(self.value_separator).join(values) + re.escape(ANSWER_CLOSE)
        )

    # -- what a subclass defines ---------------------------------------------------------------------
    @abstractmethod
    def _format_value(self, value: float, axis: int) -> str:
        """One normalized value in [0, 1] -> its text."""

    @abstractmethod
    def _value_pattern(self, axis: int) -> str:
        """Regex (without groups) of one written value."""

    @abstractmethod
    def _parse_value(self, text: str, axis: int) -> float:
        """Text matched by ``_value_pattern`` -> normalized value (NaN if it names no value)."""

    @abstractmethod
    def _value_grammar(self, axis: int) -> list[list[str]]:
        """Allowed units at each position of one written value."""

    @abstractmethod
    def unit_values(self, axis: int) -> list[np.ndarray]:
        """What each allowed unit adds to the normalized value, for every chosen step of value ``axis``, in
        order (what :mod:`.reading` weighs the model's distributions with)."""

    @abstractmethod
    def to_dict(self) -> dict:
        """Constructor arguments plus ``type``: what :func:`build_codec` rebuilds the codec from."""

    # -- encoding -----------------------------------------------------------------------------------
    def _normalized_values(self, coords: np.ndarray) -> list[float]:
        """(ndim,) float64 coordinates -> the values in [0, 1] that the text holds (NaN depth -> filler)."""
        if coords.shape != (self.ndim,):
            raise ValueError(
                f"{type(self).__name__}(ndim={self.ndim}) encodes shape ({self.ndim},), got {coords.shape}"
            )
        values = [float(c) for c in coords[:2]]
        if self.ndim == 3:
            depth = float(coords[2])
            values.append(UNKNOWN_DEPTH_FILLER_Z if math.isnan(depth) else depth / self.depth_range_mm + 0.5)
        for axis, value in enumerate(values):
            if not 0.0 <= value <= 1.0:  # also rejects NaN x/y and infinite values
                name = "xyz"[axis]
                raise ValueError(
                    f"cannot write {name}={value!r} (from coords {coords.tolist()}): normalized coordinates "
                    "must lie in [0, 1]; keypoints outside the crop (or beyond the depth range) must not be asked"
                )
        return values

    def answer_pieces(self, coords, supervise_depth: bool | None = None) -> list[tuple[str, bool]]:
        """Answer text of one keypoint, split where supervision changes.

        Args:
            coords: (ndim,) normalized x, y (and depth in mm for 3D; NaN when unknown).
            supervise_depth: 3D only. ``None`` (default): supervise the depth characters iff the depth is
                known. ``True``: always (the reference also supervises its filler for depth-less samples).
                ``False``: never.

        Returns:
            ``[(text, supervised), ...]`` whose texts concatenate to :meth:`encode`'s answer, e.g.
            ``[("[0.412,0.655,", True), ("0.000000", False), ("]", True)]``. The EOS token is not part of
            it: ending an answer is the prompt builder's job.
        """
        coords = np.asarray(coords, dtype=np.float64)
        values = self._normalized_values(coords)
        written = [self._format_value(value, axis) for axis, value in enumerate(values)]
        whole = [(ANSWER_OPEN + self.value_separator.join(written) + ANSWER_CLOSE, True)]
        if self.ndim == 2:
            return whole
        depth_known = not math.isnan(coords[2])
        if depth_known if supervise_depth is None else supervise_depth:
            return whole
        head = ANSWER_OPEN + self.value_separator.join(written[:2]) + self.value_separator
        return [(head, True), (written[2], False), (ANSWER_CLOSE, True)]

    def encode(self, coords) -> str:
        """(ndim,) normalized coordinates (3D: depth in mm, NaN if unknown) -> answer text."""
        return "".join(text for text, _ in self.answer_pieces(coords))

    # -- decoding -----------------------------------------------------------------------------------
    def decode(self, text: str) -> tuple[np.ndarray, bool]:
        """Answer text -> ((ndim,) coordinates, valid). Never raises.

        Coordinates are normalized x, y (and depth in mm for 3D). Invalid text (wrong number of values,
        a sign, more than one digit before the point, values outside [0, 1], extra text) gives NaNs.
        """
        invalid = np.full(self.ndim, np.nan)
        if not isinstance(text, str):
            return invalid, False
        match = self._answer_regex.fullmatch(text.strip())
        if match is None:
            return invalid, False
        values = [self._parse_value(group, axis) for axis, group in enumerate(match.groups())]
        if not all(0.0 <= value <= 1.0 for value in values):
            return invalid, False
        if self.ndim == 3:
            values[2] = (values[2] - 0.5) * self.depth_range_mm
        return np.asarray(values, dtype=np.float64), True

    def values_to_coordinates(self, values: np.ndarray) -> np.ndarray:
        """(Q, ndim) normalized values -> the coordinates :meth:`decode` reads (x, y as they are; z -> depth in
        mm)."""
        coords = values.copy()
        if self.ndim == 3:
            coords[:, 2] = (values[:, 2] - 0.5) * self.depth_range_mm
        return coords

    def value_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character spans of the first ``ndim`` values written in ``text`` (fewer where
        fewer are written): what a value's score is read over."""
        return [match.span() for match in list(VALUE_TEXT.finditer(text))[:self.ndim]]

    def decode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """N answer texts -> ((N, ndim) coordinates, NaN where invalid; (N,) bool validity)."""
        coords = np.full((len(texts), self.ndim), np.nan)
        valid = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            coords[i], valid[i] = self.decode(text)
        return coords, valid

    # -- constrained decoding -----------------------------------------------------------------------
    def answer_grammar(self) -> list[list[str]]:
        """The units (characters or whole added tokens) allowed at each position of an answer.

        Every answer this codec writes for a point inside the crop fits it (bar values that round up
        to 1), and every string that fits it decodes as valid: a decoder that only picks allowed units
        cannot produce a malformed answer. The first position is always ``[ANSWER_OPEN]``; the EOS is
        not included.
        """
        grammar = [[ANSWER_OPEN]]
        for axis in range(self.ndim):
            if axis > 0 and self.value_separator:
                grammar.append([self.value_separator])
            grammar.extend(self._value_grammar(axis))
        grammar.append([ANSWER_CLOSE])
        return grammar


class DecimalCodec(CoordinateCodec):
    """Coordinates as decimal text: ``[0.412,0.655]`` (2D), ``[0.412,0.655,0.503125]`` (3D).

    Args:
        ndim: 2 for (x, y), 3 for (x, y, root-relative depth in mm).
        decimals: digits after the point for x and y (the paper: 3).
        depth_decimals: digits after the point for the depth value z (the reference: 6).
        depth_range_mm: depth span mapped onto [0, 1]: ``z = depth / depth_range_mm + 0.5``.

    Example:
        >>> codec = DecimalCodec()
        >>> codec.encode([0.4123, 0.6551])
        '[0.412,0.655]'
        >>> codec.decode(" [0.412,0.655]")
        (array([0.412, 0.655]), True)
    """

    value_separator = ","

    def __init__(
        self, ndim: int = 2, decimals: int = 3, depth_decimals: int = 6, depth_range_mm: float = 2000.0
    ):
        check_range("decimals", decimals, 1, 6)  # 6 digits resolve a micron of a metre-high crop
        check_range("depth_decimals", depth_decimals, 1, 9)
        self.decimals = decimals
        self.depth_decimals = depth_decimals
        super().__init__(ndim, depth_range_mm)

    def _decimals(self, axis: int) -> int:
        return self.depth_decimals if axis == 2 else self.decimals

    def _format_value(self, value: float, axis: int) -> str:
        # Python's float formatting rounds the exact binary value half-to-even, like the reference's
        # "{:.3f}".format(x): pass float32 values to get its strings digit for digit.
        return f"{value:.{self._decimals(axis)}f}"

    def _value_pattern(self, axis: int) -> str:
        return r"[0-9]\.[0-9]+"  # any number of decimals is read; exactly one digit before the point

    def _parse_value(self, text: str, axis: int) -> float:
        return float(text)

    def unit_values(self, axis: int) -> list[np.ndarray]:
        # [0.1 * arange(10), 0.01 * arange(10), 0.001 * arange(10)] for a 3-decimal value
        return [np.arange(10) * 10.0 ** -(place + 1) for place in range(self._decimals(axis))]

    def _value_grammar(self, axis: int) -> list[list[str]]:
        # The integer digit is "0" only: a keypoint inside the crop is < 1, and allowing "1" would let a
        # constrained decoder write 1.999. The one value lost, exactly 1.0, is a 0.0005 rounding case.
        return [["0"], ["."]] + [list(DIGITS)] * self._decimals(axis)

    def to_dict(self) -> dict:
        return {"type": "decimal", "ndim": self.ndim, "decimals": self.decimals,
                "depth_decimals": self.depth_decimals, "depth_range_mm": self.depth_range_mm}


class LocationTokenCodec(CoordinateCodec):
    """Coordinates as added location tokens: ``[<loc_0412><loc_0655>]`` (the paper's ablation).

    Value ``v`` in [0, 1] becomes bin ``i = clip(round(v * num_bins), 0, num_bins - 1)``, written as
    ``<loc_{i:04d}>`` and read back as ``i / num_bins``. The tokens are new vocabulary: add
    :meth:`new_tokens` to the tokenizer and resize the model's embeddings before training.

    Args:
        num_bins: number of location tokens (shared by all axes), 2 .. 10000.
        ndim, depth_range_mm: as in :class:`DecimalCodec`.
    """

    def __init__(self, num_bins: int = 1000, ndim: int = 2, depth_range_mm: float = 2000.0):
        if not 2 <= num_bins <= 10000:
            raise ValueError(f"num_bins must be in [2, 10000] (tokens have 4 digits), got {num_bins}")
        self.num_bins = num_bins
        super().__init__(ndim, depth_range_mm)

    def new_tokens(self) -> list[str]:
        """The ``num_bins`` token strings to add to the tokenizer, in bin order."""
        return [self._token(i) for i in range(self.num_bins)]

    @staticmethod
    def _token(index: int) -> str:
        return f"<loc_{index:04d}>"

    def _format_value(self, value: float, axis: int) -> str:
        return self._token(min(round(value * self.num_bins), self.num_bins - 1))

    def _value_pattern(self, axis: int) -> str:
        return r"<loc_[0-9]{4}>"

    def _parse_value(self, text: str, axis: int) -> float:
        index = int(text[len("<loc_"):-1])
        return index / self.num_bins if index < self.num_bins else math.nan  # a bin this codec does not have

    def unit_values(self, axis: int) -> list[np.ndarray]:
        return [np.arange(self.num_bins) / self.num_bins]  # one step per value

    def _value_grammar(self, axis: int) -> list[list[str]]:
        return [self.new_tokens()]

    def to_dict(self) -> dict:
        return {"type": "location_tokens", "ndim": self.ndim, "num_bins": self.num_bins,
                "depth_range_mm": self.depth_range_mm}


CODECS = {"decimal": DecimalCodec, "location_tokens": LocationTokenCodec}


def build_codec(config: dict) -> DecimalCodec | LocationTokenCodec:
    """Rebuild a codec from its ``to_dict()`` (as stored in a model config)."""
    config = dict(config)
    kind = config.pop("type", None)
    if not isinstance(kind, str) or kind not in CODECS:
        raise ValueError(f"unknown codec type {str(kind)[:40]!r}; known: {', '.join(CODECS)}")
    try:
        return CODECS[kind](**config)
    except TypeError:  # a field this codec does not have
        raise ValueError(f"a {kind} codec has no fields {sorted(config)[:10]}") from None
