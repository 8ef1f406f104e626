"""Token id lists -> one padded batch: the one pad-id rule and the one padding helper.

Training pads on the right (``TrainingCollator``, the CLIP baseline's keypoint texts); the reference
decoding path pads its prompts on the left, as the reference's evaluation and Hugging Face
``generate`` do. Padded positions are masked, so the pad id never changes a result; the rule only
has to give every tokenizer one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id; else its unk id (Llama has no pad, and the reference pads with unk, 0);
    else its EOS id."""
    for token_id in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("the tokenizer has no pad, unk or EOS token to pad with")


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int,
                  side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """B lists of ids -> ``(B, T)`` ids filled with ``pad_value`` and the ``(B, T)`` attention mask
    (1 on the real tokens), T the longest list; ``side`` is where the padding goes."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            place = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
            ids[row, place] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, place] = 1
    return ids, mask
