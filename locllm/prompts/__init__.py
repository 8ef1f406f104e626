"""Prompts: the keypoint conversation as token ids, labels and the answer grammar."""

from .char_tokenizer import build_char_tokenizer
from .conversation import DEFAULT_QUESTION, IGNORE_INDEX, PromptBuilder, PromptStyle

__all__ = ["DEFAULT_QUESTION", "IGNORE_INDEX", "PromptBuilder", "PromptStyle", "build_char_tokenizer"]
