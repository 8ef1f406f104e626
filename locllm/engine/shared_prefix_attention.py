"""Attention over cache rows that hold one shared prefix and several queries after it.

The fast path keeps one KV-cache row per person: the image prefix, then that person's K keypoint
queries and their answers. Each query may see the prefix and its own tokens, nothing else. A dense
attention masked to that would spend most of its work on the other queries' slots (K - 1 of every K
after the prefix): on the demo model, more than the rest of the forward. Here each query's tokens
score the prefix and their own slots (gathered) only, under one softmax over both, the "cascade"
attention of shared-prefix serving engines in plain torch ops (the fused kernels take no such layout).

It runs as a transformers attention implementation, selected for the duration of a decoding by
:func:`shared_prefix_attention`; each forward passes its :class:`SharedPrefixLayout` as
``shared_prefix=``. A forward without one is ordinary sdpa attention.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

IMPLEMENTATION = "locllm_shared_prefix"


@dataclass
class SharedPrefixLayout:
    """Who sees what in one forward, the same for every row of the batch.

    ``prefix_len``: cache slots ``[0, prefix_len)`` hold the prefix, seen by every query;
    ``prefix_tokens``: how many of the new tokens are the prefix itself (its first pass: all of it,
    causal among themselves; later: 0). The K queries' new tokens: ``token_index`` (K, Tq) their
    indices among the new tokens (``token_valid`` marks the real ones of the padded grid);
    ``own_slots`` (K, R) the cache slots each query has written, new ones included, and
    ``own_visible`` (K, Tq, R) which of them each new token may see (written, not after itself).
    ``in_order``: the new tokens are exactly the grid, query by query (decoding steps), so the
    queries' tokens are a view of them, not a gather.
    """

    prefix_len: int
    prefix_tokens: int
    token_index: torch.Tensor
    token_valid: torch.Tensor
    own_slots: torch.Tensor
    own_visible: torch.Tensor
    in_order: bool


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
               shared_prefix: SharedPrefixLayout | None = None, **kwargs):
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    layout = shared_prefix
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    p = layout.prefix_len
    out = query.new_zeros(query.shape) if layout.prefix_tokens else None
    if layout.prefix_tokens:
        out[:, :, :p] = F.scaled_dot_product_attention(query[:, :, :p], key[:, :, :p], value[:, :, :p],
                                                       is_causal=True, scale=scaling)
    scaled = query * scaling  # cheaper than scaling the scores
    grid = layout.token_index
    queries = scaled.unflatten(2, grid.shape) if layout.in_order else scaled[:, :, grid]  # (B, H, K, Tq, D)
    own_keys, own_values = key[:, :, layout.own_slots], value[:, :, layout.own_slots]  # (B, H, K, R, D)
    to_prefix = torch.einsum("bhktd,bhpd->bhktp", queries, key[:, :, :p])
    to_own = torch.einsum("bhktd,bhkrd->bhktr", queries, own_keys)
    to_own = to_own.masked_fill(~layout.own_visible, float("-inf"))
    weights = torch.cat([to_prefix, to_own], dim=-1).softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    answered = (torch.einsum("bhktp,bhpd->bhktd", weights[..., :p], value[:, :, :p])
                + torch.einsum("bhktr,bhkrd->bhktd", weights[..., p:], own_values))
    if layout.in_order:
        return answered.flatten(2, 3).transpose(1, 2).contiguous(), None
    out[:, :, layout.token_index[layout.token_valid]] = answered[:, :, layout.token_valid]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)  # for forwards without a layout


@contextmanager
def shared_prefix_attention(text_config):
    """Within the block, the language model of ``text_config`` attends with this module's attention."""
    previous = text_config._attn_implementation
    text_config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        text_config._attn_implementation = previous
