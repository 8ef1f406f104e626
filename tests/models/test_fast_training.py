"""What makes a pretrained LM trainable on a CPU: the LM head only at supervised positions (same loss and
gradients as the full head), with activation checkpointing, and keeping only the first N LM layers."""

import pytest
import torch
from transformers import LlamaForCausalLM

from locllm.models import LocLLMForKeypointLocalization
from locllm.models.tiny import locllm_config


def _model(**overrides):
    torch.manual_seed(0)
    model = LocLLMForKeypointLocalization(locllm_config("tiny", vocab_size=100, lora_dropout=0.0, **overrides))
    with torch.no_grad():  # LoRA B starts at zero; make it count so its gradients are compared too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    return model


def _batch(model):
    """Two rows of different lengths (right padding) with answers at different places."""
    n = model.config.num_image_tokens
    image = model.config.image_token_id
    ids = torch.tensor([[1, 5] + [image] * n + [7, 8, 9, 10, 11, 0],
                        [1, 6] + [image] * n + [12, 13, 14, 15, 16, 17]])
    mask = torch.ones_like(ids)
    mask[0, -1] = 0
    labels = ids.clone()
    labels[0, :-4] = labels[0, -1] = -100
    labels[1, :-2] = -100
    pixels = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "labels": labels}


def _loss_and_grads(model, batch, **kwargs):
    model.zero_grad()
    loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, torch.tensor(7)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_supervised_logits_only_gives_the_same_loss_and_gradients(num_items, checkpointing):
    model = _model().train()
    if checkpointing:
        model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batch = _batch(model)
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    full_loss, full_grads = _loss_and_grads(model, batch, **extra)
    fast_loss, fast_grads = _loss_and_grads(model, batch, supervised_logits_only=True, **extra)
    torch.testing.assert_close(fast_loss, full_loss)
    assert fast_grads.keys() == full_grads.keys() and any("lora_A" in n for n in fast_grads)
    for name, grad in full_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, msg=name)


def test_supervised_logits_are_the_full_logits_at_the_supervised_positions():
    model = _model().eval()
    batch = _batch(model)
    with torch.no_grad():
        full = model(**batch).logits
        fast = model(**batch, supervised_logits_only=True).logits
    supervised = batch["labels"][:, 1:] != -100
    assert fast.shape == (int(supervised.sum()), 100)
    torch.testing.assert_close(fast, full[:, :-1][supervised])


def test_text_num_layers_keeps_the_first_layers_and_survives_a_round_trip(tmp_path):
    config = locllm_config("tiny", vocab_size=100)
    config.text_config.num_hidden_layers = 3
    torch.manual_seed(0)
    llm = LlamaForCausalLM(config.text_config)
    llm.save_pretrained(tmp_path / "llm")
    config.text_model_name_or_path, config.text_num_layers = str(tmp_path / "llm"), 2
    model = LocLLMForKeypointLocalization.from_bases(config)
    layers = model.language_model.model.layers
    assert len(layers) == 2 and model.config.text_config.num_hidden_layers == 2
    torch.testing.assert_close(layers[1].mlp.up_proj.weight, llm.model.layers[1].mlp.up_proj.weight)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = LocLLMForKeypointLocalization.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.text_num_layers == 2 and len(loaded.language_model.model.layers) == 2
    batch = _batch(model)
    del batch["labels"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, loaded(**batch).logits)
