import copy

import pytest
import torch

from locllm.models import LocLLMForKeypointLocalization
from locllm.models.tiny import locllm_config
from locllm.prompts import PromptBuilder, PromptStyle, build_char_tokenizer


def tiny_checkpoint(folder, tokenizer=None, style=None, seed=0, lora_scale=0.3):
    """A tiny random LocLLM with LoRA that matters, saved with its tokenizer."""
    tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else build_char_tokenizer()
    style = style or PromptStyle()
    builder = PromptBuilder(tokenizer, style, 1)  # adds the image token to the tokenizer
    vocab = max(len(tokenizer), builder.image_token_id + 1)
    config = locllm_config("tiny", vocab_size=vocab, image_token_id=builder.image_token_id,
                           prompt_style=style.to_dict())
    torch.manual_seed(seed)
    model = LocLLMForKeypointLocalization(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=lora_scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_char"))
