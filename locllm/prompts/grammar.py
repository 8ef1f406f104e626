"""The answer grammar: a codec's answer shape as the token steps of one tokenizer.

A grammar-constrained decoder (``locllm.engine.decoding.fast_decode``) forces the steps with one
allowed token (brackets, separators, EOS) and chooses only among the value tokens, so every answer
parses; each step also says which value it writes, which the per-value scores are averaged over.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codecs.text import CoordinateCodec
from .conversation import PromptBuilder


@dataclass(frozen=True)
class GrammarItem:
    """One token of an answer: ``allowed`` token ids (one id = forced) and which value it writes
    (0 = x, 1 = y, 2 = depth; ``None`` for brackets, separators and EOS)."""

    allowed: tuple[int, ...]
    value_index: int | None

    @property
    def forced(self) -> bool:
        return len(self.allowed) == 1


@dataclass(frozen=True)
class AnswerGrammar:
    """The token sequence every answer follows, e.g. ``▁[ 0 . d d d , 0 . d d d ] </s>`` for Llama."""

    items: tuple[GrammarItem, ...]
    num_values: int

    def __len__(self) -> int:
        return len(self.items)


def build_answer_grammar(builder: PromptBuilder, codec: CoordinateCodec) -> AnswerGrammar:
    """The codec's answer shape as token steps of the builder's tokenizer, with the value each step writes."""
    steps = builder.allowed_answer_ids(codec)
    units = codec.answer_grammar()[1:]  # after "["; the answer-start ids cover the separator and "["
    separator = codec.value_separator
    value_of_unit: list[int | None] = []
    value = 0
    for allowed in units:
        if separator and allowed == [separator]:
            value_of_unit.append(None)
            value += 1
        elif allowed == ["]"]:
            value_of_unit.append(None)
        else:
            value_of_unit.append(value)
            if not separator:
                value += 1  # location tokens: one unit per value, no separator
    start = len(steps) - 1 - len(units)
    items = [GrammarItem(tuple(ids), None) for ids in steps[:start]]
    items += [GrammarItem(tuple(ids), v) for ids, v in zip(steps[start:-1], value_of_unit, strict=True)]
    items.append(GrammarItem(tuple(steps[-1]), None))
    return AnswerGrammar(tuple(items), codec.ndim)
