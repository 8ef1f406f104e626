"""The shared-prefix attention equals dense attention under the mask it stands for."""

import pytest
import torch

from locllm.engine.shared_prefix_attention import SharedPrefixLayout, _attention


class _Module:
    def __init__(self, groups):
        self.num_key_value_groups = groups


def _dense_reference(query, key, value, visible, scaling):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.einsum("bhtd,bhcd->bhtc", query, key) * scaling
    return (scores.masked_fill(~visible, float("-inf")).softmax(-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("groups", [1, 2])  # 2: grouped-query attention, two query heads per key head
def test_first_pass_and_a_step_equal_masked_dense_attention(groups):
    torch.manual_seed(0)
    prefix, lengths, capacity, heads, dim = 5, [3, 1, 2], 20, 4, 8
    slots_of = [list(range(prefix + sum(lengths[:k]), prefix + sum(lengths[:k + 1]))) for k in range(3)]
    key, value = torch.randn(2, heads // groups, capacity, dim), torch.randn(2, heads // groups, capacity, dim)

    # first pass: the prefix (causal) and the three queries' tokens, 11 new tokens in slots 0..10
    tokens = prefix + sum(lengths)
    query = torch.randn(2, heads, tokens, dim)
    owner = [-1] * prefix + [k for k in range(3) for _ in range(lengths[k])]
    visible = torch.tensor([[c < tokens and c <= t and (owner[c] == -1 or owner[c] == owner[t]) for c in range(capacity)]
                            for t in range(tokens)])
    index = torch.tensor([[s[j] if j < len(s) else 0 for j in range(3)] for s in slots_of])
    valid = torch.tensor([[j < len(s) for j in range(3)] for s in slots_of])
    own_slots = torch.tensor([s + [0] * (6 - len(s)) for s in slots_of])
    written = torch.tensor([[r < len(s) for r in range(6)] for s in slots_of])
    own_visible = written[:, None, :] & (own_slots[:, None, :] <= index[:, :, None])
    layout = SharedPrefixLayout(prefix, prefix, index, valid, own_slots, own_visible, in_order=False)
    out, _ = _attention(_Module(groups), query, key, value, None, scaling=dim ** -0.5, shared_prefix=layout)
    torch.testing.assert_close(out, _dense_reference(query, key, value, visible, dim ** -0.5))

    # one step: two new tokens per query in slots 11..16, query by query
    step_slots = [[11, 12], [13, 14], [15, 16]]
    query = torch.randn(2, heads, 6, dim)
    for k in range(3):
        slots_of[k] += step_slots[k]
    owner += [k for k in range(3) for _ in range(2)]
    visible = torch.tensor([[c <= 11 + t and (owner[c] == -1 or owner[c] == owner[11 + t]) for c in range(capacity)]
                            for t in range(6)])
    own_slots = torch.tensor([s + [0] * (6 - len(s)) for s in slots_of])
    written = torch.tensor([[r < len(s) for r in range(6)] for s in slots_of])
    index = torch.arange(6).view(3, 2)
    own_visible = written[:, None, :] & (own_slots[:, None, :] <= (11 + index)[:, :, None])
    layout = SharedPrefixLayout(prefix, 0, index, torch.ones(3, 2, dtype=torch.bool), own_slots, own_visible,
                                in_order=True)
    out, _ = _attention(_Module(groups), query, key, value, None, scaling=dim ** -0.5, shared_prefix=layout)
    torch.testing.assert_close(out, _dense_reference(query, key, value, visible, dim ** -0.5))


def test_a_forward_without_layout_is_plain_sdpa_and_the_implementation_is_restored():
    """Selected, the implementation still serves ordinary forwards (e.g. a padded batch) as sdpa does."""
    from locllm.engine.shared_prefix_attention import shared_prefix_attention
    from locllm.models import LocLLMForKeypointLocalization
    from locllm.models.tiny import locllm_config

    torch.manual_seed(0)
    model = LocLLMForKeypointLocalization(locllm_config("tiny", vocab_size=64)).eval()
    ids = torch.randint(3, 60, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        expected = model.language_model(input_ids=ids, attention_mask=mask).logits
        with shared_prefix_attention(model.config.text_config):
            got = model.language_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected)
    assert model.config.text_config._attn_implementation == "sdpa"
