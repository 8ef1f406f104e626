"""A small word-level tokenizer for the CPU demo model, trained in code on the prompt vocabulary.

The character tokenizer writes a description + question round in ~230 tokens; this one writes it in
~50, which makes the demo's training sequences about 4x shorter (and CPU training that much faster).

- Every word of our keypoint descriptions, names and prompt words is one token, with the space
  before it (``" knee"``), as GPT-2-style vocabularies do; words it never saw (a user's own
  description) fall back to smaller pieces, down to single characters, so any ASCII text encodes.
- Digits, ``.``, ``,``, ``[``, ``]`` and whitespace are always single tokens: the pre-tokenizer
  isolates them before the BPE model sees them, so answers are one token per character, as
  :class:`~locllm.prompts.PromptBuilder` requires.
- Special tokens as in the character tokenizer: ``<unk>`` 0, ``<s>`` 1 (BOS), ``</s>`` 2 (EOS),
  ``<pad>`` 3, ``<image>`` 4. Decoding concatenates the tokens, which reproduces the text exactly.

It round-trips through ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any fast tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from ..keypoints import KEYPOINT_SETS
from .char_tokenizer import CHARACTERS, SPECIAL_TOKENS, wrap_backend
from .conversation import PromptStyle

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# A word with the space before it, or a single digit, whitespace or punctuation character.
_PIECES = Regex(r" ?[A-Za-z]+|[0-9]|\s|[^\sA-Za-z0-9]")
# Far more than the prompt vocabulary needs (about 300 words), so every word it has becomes a token.
_MAX_VOCAB = 2000


def prompt_corpus(style: PromptStyle | None = None) -> list[str]:
    """The texts the demo model is prompted with: every known keypoint's round, plus the image prefix."""
    style = style if style is not None else PromptStyle.default()
    keypoints = {kp.name: kp for keypoint_set in KEYPOINT_SETS.values() for kp in keypoint_set}
    return [style.image_prefix, style.answer_prefix + style.answer_separator] + [
        style.query_text(kp) for kp in keypoints.values()
    ]


def build_demo_tokenizer(corpus: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Train the word-level tokenizer on ``corpus`` (default: :func:`prompt_corpus`)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(_PIECES, behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=_MAX_VOCAB,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(CHARACTERS),  # every character is a token, so nothing ASCII becomes <unk>
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus) if corpus is not None else prompt_corpus(), trainer=trainer)
    return wrap_backend(backend)


__all__ = ["build_demo_tokenizer", "prompt_corpus"]
