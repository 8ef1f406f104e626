"""Prompts: the keypoint conversation as token ids (conversation) and coordinates as answer text (codec)."""

from .char_tokenizer import build_char_tokenizer
from .codec import ANSWER_OPEN, CODECS, CoordinateCodec, DecimalCodec, LocationTokenCodec, build_codec
from .conversation import DEFAULT_QUESTION, IGNORE_INDEX, PromptBuilder, PromptStyle

__all__ = [
    "ANSWER_OPEN", "CODECS", "DEFAULT_QUESTION", "IGNORE_INDEX", "CoordinateCodec", "DecimalCodec",
    "LocationTokenCodec", "PromptBuilder", "PromptStyle", "build_char_tokenizer", "build_codec",
]
