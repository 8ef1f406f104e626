"""Inference: the Localizer and its two decoding paths (reference and fast)."""

from .decoding import AnswerGrammar, GrammarItem, fast_decode, reference_decode
from .localizer import Localizer, PersonKeypoints, build_answer_grammar

__all__ = ["AnswerGrammar", "GrammarItem", "Localizer", "PersonKeypoints", "build_answer_grammar", "fast_decode",
           "reference_decode"]
