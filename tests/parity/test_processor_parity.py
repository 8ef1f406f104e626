"""The processor of an imported reference checkpoint (no processor file: built from its config.json) pads
its prompts exactly as the reference's evaluation batch was padded."""

import json

import pytest

from locllm.models.processing_locllm import LocLLMProcessor
from locllm.prompts import PromptStyle


@pytest.mark.parametrize("name", ["eval_coco", "eval_mpii", "eval_h36m"])
def test_reference_checkpoint_processor_pads_as_the_reference(imported, golden_dir, name):
    folder, model = imported
    record = json.loads((golden_dir / "prompts" / f"{name}.json").read_text())
    processor = LocLLMProcessor.from_pretrained(folder)
    assert processor.builder.style == PromptStyle.reference()
    assert processor.builder.image_token_id == model.config.image_token_id == 32000
    assert processor.pad_token_id == record["pad_token_id"]
    prompts = [[i for i, m in zip(ids, mask, strict=True) if m]
               for ids, mask in zip(record["input_ids"], record["attention_mask"], strict=True)]
    input_ids, attention_mask = processor.pad(prompts, side="left")
    assert input_ids.tolist() == record["input_ids"] and attention_mask.tolist() == record["attention_mask"]
