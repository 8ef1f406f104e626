"""The reference's tiny checkpoint, imported with ``locllm import-reference``, against its recorded outputs.

reference-golden/model holds the full state dict the reference trainer saved for a tiny model (Llama
hidden 64, DINOv2-style ViT width 32 with 2 heads, LoRA r 8 on both), with the two vocabulary matrices
stored as 4-bit codes, and what the reference computed with it on the COCO crop. We rebuild the
reference's checkpoint folder from it, import it through the CLI and compare (fp32, CPU): patch
tokens, projected features, logits, the 20-token greedy answer and the 17-prompt left-padded batch.
"""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from locllm.models import CLIP_MEAN, CLIP_STD
from locllm.models.vision import patch_features

LOGIT_TOLERANCE = 1e-4  # the README measured ~1e-6 on CPU; exact bits depend on the machine
FEATURE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def record(golden_model_dir):
    return json.loads((golden_model_dir / "forward_fp32.json").read_text())


@pytest.fixture(scope="module")
def arrays(golden_model_dir):
    return dict(np.load(golden_model_dir / "forward_arrays.npz"))


@pytest.fixture(scope="module")
def pixels(golden_dir, record):
    """The recorded COCO crop, ToTensor + CLIP Normalize as the reference does: bit-identical to its tensor."""
    crop = np.asarray(Image.open(golden_dir / "prompts" / "crops" / "coco_train.png").convert("RGB"))
    tensor = torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div(255)
    tensor = (tensor - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    tensor = tensor[None]
    assert hashlib.sha256(tensor.numpy().tobytes()).hexdigest() == record["image_sha256"]
    assert tensor.double().sum().item() == pytest.approx(record["image_summary"]["sum"], rel=1e-9)
    return tensor


@pytest.fixture(scope="module")
def input_ids(record):
    return torch.tensor([record["input_ids"]])


def test_imported_checkpoint_files_and_config(imported):
    out, model = imported
    assert {"config.json", "trained.safetensors", "base.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    config = model.config
    assert (config.image_token, config.image_token_id, config.image_size) == ("<im_patch>", 32000, 224)
    assert config.position_interpolation == "reference"
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert config.prompt_style["image_token"] == "<im_patch>" and config.prompt_style["strip_space_around_special_tokens"]
    # The config's dino_path file exists but a tower read from it alone would get 1 head (32 / 64), not 2:
    # the tower's base stays in the checkpoint; the LLM's llama_path does not exist here.
    assert config.vision_model_name_or_path is None and config.text_model_name_or_path is None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids("<im_patch>") == 32000 and tokenizer.pad_token == "<unk>"


def test_vision_features_match(imported, pixels, arrays):
    _, model = imported
    with torch.no_grad():
        patches = patch_features(model.vision_tower, pixels)[0]
        projected = model.get_image_features(pixels)[0]
    torch.testing.assert_close(patches, torch.from_numpy(arrays["vision_x_norm_patchtokens"]),
                               rtol=0, atol=FEATURE_TOLERANCE)
    torch.testing.assert_close(projected, torch.from_numpy(arrays["encode_image"]), rtol=0, atol=FEATURE_TOLERANCE)


def test_logits_match(imported, pixels, input_ids, record, arrays):
    _, model = imported
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixels).logits[0]
    cols = torch.from_numpy(arrays["logit_cols"])
    diffs = {
        "first8": (logits[:8][:, cols] - torch.from_numpy(arrays["logits_first8_cols"])).abs().max().item(),
        "last8": (logits[-8:][:, cols] - torch.from_numpy(arrays["logits_last8_cols"])).abs().max().item(),
        "last_full": (logits[-1] - torch.from_numpy(arrays["logits_last_position_full"])).abs().max().item(),
    }
    assert max(diffs.values()) <= LOGIT_TOLERANCE, diffs
    per_position = record["logits"]["per_position"]
    assert logits.argmax(-1).tolist() == per_position["argmax"]
    np.testing.assert_allclose(logits.logsumexp(-1).numpy(), per_position["logsumexp"], rtol=0, atol=LOGIT_TOLERANCE)


def test_greedy_answer_matches(imported, pixels, input_ids, record):
    _, model = imported
    expected = record["generate_single_max_new_tokens_20"]["generated_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=20, do_sample=False)
    assert out[0, input_ids.shape[1]:].tolist() == expected


def test_left_padded_eval_batch_matches(imported, pixels, golden_dir, record, arrays):
    _, model = imported
    batch = json.loads((golden_dir / "prompts" / "eval_coco.json").read_text())
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    expected = record["eval_batch17"]
    assert list(ids.shape) == expected["input_ids_shape"]
    assert (mask == 0).sum(1).tolist() == expected["num_pad_per_row"]
    with torch.no_grad():
        # One person's 17 prompts share the crop: encode it once instead of at every decoding step.
        features = model.get_image_features(pixels).expand(len(ids), -1, -1)
        # Recorded from a plain forward, positions 0..T-1 in every row (padding included).
        last = model(input_ids=ids, image_features=features, attention_mask=mask, logits_to_keep=1).logits[:, -1]
        out = model.generate(input_ids=ids, image_features=features, attention_mask=mask, max_new_tokens=13,
                             do_sample=False, pad_token_id=0)
    cols = torch.from_numpy(arrays["logit_cols"])
    diff = (last[:, cols] - torch.from_numpy(arrays["eval_batch17_last_position_cols"])).abs().max().item()
    assert diff <= LOGIT_TOLERANCE
    assert out[:, ids.shape[1]:].tolist() == [row["generated_ids"] for row in expected["outputs"]]
