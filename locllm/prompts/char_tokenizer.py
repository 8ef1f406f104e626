"""A tiny character-level tokenizer for tiny test models and the CPU demo model.

Every printable ASCII character, plus newline and tab, is one token; anything else becomes
``<unk>``. Special tokens: ``<unk>`` 0, ``<s>`` 1 (BOS, prepended like Llama's), ``</s>`` 2 (EOS),
``<pad>`` 3 and ``<image>`` 4 (the image placeholder of the default prompt style). It is built in
code, so tests need no downloaded files, and it round-trips through ``save_pretrained`` /
``from_pretrained`` like any Hugging Face tokenizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import AddedToken, Tokenizer, decoders, models, processors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
CHARACTERS = "\n\t" + "".join(chr(code) for code in range(0x20, 0x7F))  # printable ASCII, space to '~'


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character tokenizer (vocabulary: 5 special tokens + 97 characters = 102)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    # A BPE model without merges splits text into its characters; unknown characters map to <unk>.
    return wrap_backend(Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")))


def wrap_backend(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` model with our special tokens (BOS prepended like Llama's; tokens decoded by plain
    concatenation) as a Hugging Face tokenizer."""
    # imported here: transformers takes a second to import and nothing else in locllm.prompts needs it
    from transformers import PreTrainedTokenizerFast

    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    backend.decoder = decoders.Fuse()  # concatenate tokens; the default would join them with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=["<image>"],
        model_max_length=4096,
    )
