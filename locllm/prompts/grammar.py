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


@dataclass(frozen=True)
class AnswerChoices:
    """Where a grammar-constrained decoder chooses, readable from a teacher-forced sequence.

    ``choice_ids``: the tokens it chooses among (the value tokens: digits, or location tokens).
    ``after_ids``: the tokens that come right before a choice step. A supervised token is a choice exactly
    when it is one of ``choice_ids`` and the token before it one of ``after_ids``; every other answer
    token is forced, so its likelihood under the constrained decoder is 1.
    """

    choice_ids: tuple[int, ...]
    after_ids: tuple[int, ...]


def answer_choices(grammar: AnswerGrammar) -> AnswerChoices:
    """The grammar's choice steps (they must all allow the same tokens) and what precedes them; an error
    when a forced value token (the ``0`` before the point) follows a token that also precedes a choice."""
    free = [i for i, item in enumerate(grammar.items) if not item.forced]
    if not free:
        raise ValueError("the answer grammar has no step with a choice")
    choice_ids = grammar.items[free[0]].allowed
    if any(set(grammar.items[i].allowed) != set(choice_ids) for i in free):
        raise ValueError("the answer grammar's choice steps allow different tokens; the answer-vocabulary loss "
                         "needs one set")
    after_ids = {token for i in free if i > 0 for token in grammar.items[i - 1].allowed}
    for i, item in enumerate(grammar.items):
        if item.forced and item.allowed[0] in choice_ids and i > 0 and after_ids & set(grammar.items[i - 1].allowed):
            raise ValueError("this tokenizer writes a forced value token where a choice could stand; the "
                             "answer-vocabulary loss cannot tell them apart")
    return AnswerChoices(tuple(choice_ids), tuple(sorted(after_ids)))
