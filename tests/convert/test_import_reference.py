"""``locllm import-reference`` on tiny checkpoints written in the reference's layout.

Each test writes a random tiny model the way the reference trainer saves one (``pytorch_model.bin``
with the reference's key names, fused ViT qkv with LoRA on its q and v thirds, LoRA inside the LLM's
q/v projections, ``config.json``, the DINOv2 ``.pth`` the config names, a tokenizer with
``<im_patch>``), imports it, and compares our model's logits with a small re-implementation of the
reference's forward written here from its equations, on the reference's own tensors.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from locllm.cli import main
from locllm.convert.reference import import_reference_checkpoint
from locllm.models import LocLLMForKeypointLocalization

PATCH = 14
PRETRAIN_GRID = 5  # the reference's tower is built for 518 px (37 x 37); 70 px here
CROP = 42  # -> a 3 x 3 grid: the position table is resampled as in the reference
VISION = dict(dim=128, depth=2, heads=2)  # 128 / 64 = 2 heads: a tower a .pth alone describes
LLM = dict(hidden=64, layers=2, heads=4, intermediate=128, vocab=40)
IMAGE_TOKEN_ID = LLM["vocab"]  # outside the embedding table, as the reference's 32000
LORA_R, LORA_ALPHA = 8, 16
SCALING = LORA_ALPHA / LORA_R
NUM_PATCHES = (CROP // PATCH) ** 2
WORDS = ["Image:", "Keypoint:", "Question:", "Answer:", "where", "is", "the", "nose", "left", "knee", "?", "[", "]",
         ",", "."] + [str(d) for d in range(10)]


def _reference_state_dict() -> dict[str, torch.Tensor]:
    """Random weights under the reference's names; LoRA B non-zero so that LoRA matters."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    d, h, r = VISION["dim"], LLM["hidden"], LORA_R
    state = {
        "vision_model.cls_token": rand(1, 1, d),
        "vision_model.mask_token": rand(1, d),
        "vision_model.pos_embed": rand(1, 1 + PRETRAIN_GRID**2, d),
        "vision_model.patch_embed.proj.weight": rand(d, 3, PATCH, PATCH, std=0.05),
        "vision_model.patch_embed.proj.bias": rand(d),
        "vision_model.norm.weight": rand(d, mean=1.0),
        "vision_model.norm.bias": rand(d),
        "mm_projector.weight": rand(h, d, std=0.1),
        "mm_projector.bias": rand(h),
        "model.embed_tokens.weight": rand(LLM["vocab"], h),
        "model.norm.weight": rand(h, mean=1.0),
        "lm_head.weight": rand(LLM["vocab"], h),
    }
    for i in range(VISION["depth"]):
        b = f"vision_model.blocks.{i}."
        state |= {
            b + "norm1.weight": rand(d, mean=1.0), b + "norm1.bias": rand(d),
            b + "attn.qkv.weight": rand(3 * d, d, std=0.1), b + "attn.qkv.bias": rand(3 * d),
            b + "attn.proj.weight": rand(d, d, std=0.1), b + "attn.proj.bias": rand(d),
            b + "ls1.gamma": rand(d, mean=1.0),
            b + "norm2.weight": rand(d, mean=1.0), b + "norm2.bias": rand(d),
            b + "mlp.fc1.weight": rand(4 * d, d, std=0.1), b + "mlp.fc1.bias": rand(4 * d),
            b + "mlp.fc2.weight": rand(d, 4 * d, std=0.1), b + "mlp.fc2.bias": rand(d),
            b + "ls2.gamma": rand(d, mean=1.0),
        }
        for proj in "qv":
            state |= {b + f"attn.lora_A_{proj}": rand(r, d), b + f"attn.lora_B_{proj}": rand(d, r)}
    for i in range(LLM["layers"]):
        b = f"model.layers.{i}."
        state |= {
            b + "input_layernorm.weight": rand(h, mean=1.0), b + "post_attention_layernorm.weight": rand(h, mean=1.0),
            b + "self_attn.rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16),
            b + "mlp.gate_proj.weight": rand(LLM["intermediate"], h, std=0.1),
            b + "mlp.up_proj.weight": rand(LLM["intermediate"], h, std=0.1),
            b + "mlp.down_proj.weight": rand(h, LLM["intermediate"], std=0.1),
        }
        for proj in "qkvo":
            state[b + f"self_attn.{proj}_proj.weight"] = rand(h, h, std=0.1)
        for proj in "qv":
            state |= {b + f"self_attn.{proj}_proj.lora_A": rand(r, h), b + f"self_attn.{proj}_proj.lora_B": rand(h, r)}
    return state


def _dinov2_file(state) -> dict[str, torch.Tensor]:
    """The base DINOv2 .pth: the tower without LoRA, with layer scales that differ from the checkpoint's.

    The reference's loader never reads the checkpoint's ``gamma`` keys, so the file's are the ones in use.
    """
    base = {k.removeprefix("vision_model."): v.clone() for k, v in state.items()
            if k.startswith("vision_model.") and "lora_" not in k}
    for key in base:
        if key.endswith(".gamma"):
            base[key] = base[key] + 0.25
    return base


def _reference_config(**overrides) -> dict:
    config = {
        "architectures": ["LocLLMModel"], "model_type": "locllm", "transformers_version": "4.31.0",
        "torch_dtype": "float32", "use_cache": False, "_name_or_path": "tiny_vicuna",
        "hidden_size": LLM["hidden"], "intermediate_size": LLM["intermediate"],
        "num_hidden_layers": LLM["layers"], "num_attention_heads": LLM["heads"], "num_key_value_heads": LLM["heads"],
        "vocab_size": LLM["vocab"], "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "initializer_range": 0.02, "pretraining_tp": 1, "rope_scaling": None, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "llama_path": "weights/vicuna-7b-v1.5", "dino_path": "dinov2_tiny.pth", "crop_size": CROP,
        "im_patch_token": IMAGE_TOKEN_ID, "num_patches": NUM_PATCHES,
        "lora_llm_enable": True, "lora_llm_r": LORA_R, "lora_llm_alpha": LORA_ALPHA, "lora_llm_dropout": 0.05,
        "lora_vision_enable": True, "lora_vision_r": LORA_R, "lora_vision_alpha": LORA_ALPHA,
        "lora_vision_dropout": 0.05,
    }
    return config | overrides


def _save_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    vocab |= {f"w{i}": i for i in range(len(vocab), LLM["vocab"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.add_tokens(["<im_patch>"], special_tokens=True)  # as the reference's initialize_vision_tokenizer
    tokenizer.save_pretrained(folder)


def _write_reference_checkpoint(folder, state, config=None, dino_file=True):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config or _reference_config()))
    if dino_file:
        torch.save(_dinov2_file(state), folder / "dinov2_tiny.pth")
    _save_tokenizer(folder)
    return folder


# ---------------------------------------------------------------- the reference's forward, from its equations


def _reference_image_features(sd, pixels):
    """DINOv2 (timm layout: fused qkv, LoRA added to its q and v thirds) -> normalized patch tokens -> projector."""
    d, heads = VISION["dim"], VISION["heads"]

    def v(key):
        return sd["vision_model." + key]

    x = F.conv2d(pixels, v("patch_embed.proj.weight"), v("patch_embed.proj.bias"), stride=PATCH)
    x = torch.cat([v("cls_token").expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    # DINOv2's interpolate_pos_encoding: bicubic with scale (grid + 0.1) / pretrained grid, CLS row kept.
    pos, grid = v("pos_embed"), CROP // PATCH
    patch_pos = pos[:, 1:].reshape(1, PRETRAIN_GRID, PRETRAIN_GRID, d).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / math.sqrt(PRETRAIN_GRID**2)
    patch_pos = F.interpolate(patch_pos, scale_factor=(scale, scale), mode="bicubic")
    x = x + torch.cat([pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, d)], dim=1)
    for i in range(VISION["depth"]):
        def b(key, i=i):
            return v(f"blocks.{i}.{key}")

        h = F.layer_norm(x, (d,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        q, k, val = F.linear(h, b("attn.qkv.weight"), b("attn.qkv.bias")).chunk(3, dim=-1)
        q = q + F.linear(F.linear(h, b("attn.lora_A_q")), b("attn.lora_B_q")) * SCALING
        val = val + F.linear(F.linear(h, b("attn.lora_A_v")), b("attn.lora_B_v")) * SCALING
        q, k, val = (t.reshape(len(x), -1, heads, d // heads).transpose(1, 2) for t in (q, k, val))
        attention = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ val
        attention = attention.transpose(1, 2).reshape(len(x), -1, d)
        x = x + b("ls1.gamma") * F.linear(attention, b("attn.proj.weight"), b("attn.proj.bias"))
        h = F.layer_norm(x, (d,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        mlp = F.linear(F.gelu(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias"))), b("mlp.fc2.weight"), b("mlp.fc2.bias"))
        x = x + b("ls2.gamma") * mlp
    patches = F.layer_norm(x, (d,), v("norm.weight"), v("norm.bias"), eps=1e-6)[:, 1:]
    return F.linear(patches, sd["mm_projector.weight"], sd["mm_projector.bias"])


def _reference_logits(sd, input_ids, pixels):
    """Llama with LoRA on q/v; the image features replace the <im_patch> embeddings."""
    hidden, heads = LLM["hidden"], LLM["heads"]
    head_dim = hidden // heads
    is_image = input_ids == IMAGE_TOKEN_ID
    x = sd["model.embed_tokens.weight"][input_ids.masked_fill(is_image, 0)]
    x[is_image] = _reference_image_features(sd, pixels).reshape(-1, hidden)
    batch, length = input_ids.shape
    angles = torch.arange(length)[:, None] / 10000 ** (torch.arange(0, head_dim, 2) / head_dim)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rotate(t):
        return t * cos + torch.cat([-t[..., head_dim // 2:], t[..., : head_dim // 2]], dim=-1) * sin

    def rms_norm(t, weight):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(LLM["layers"]):
        def w(key, i=i):
            return sd[f"model.layers.{i}.{key}"]

        h = rms_norm(x, w("input_layernorm.weight"))

        def project(name, h=h, w=w):
            out = F.linear(h, w(f"self_attn.{name}_proj.weight"))
            if name in "qv":
                lora = F.linear(F.linear(h, w(f"self_attn.{name}_proj.lora_A")), w(f"self_attn.{name}_proj.lora_B"))
                out = out + lora * SCALING
            return out.reshape(batch, length, heads, head_dim).transpose(1, 2)

        q, k, v = rotate(project("q")), rotate(project("k")), project("v")
        attention = ((q @ k.transpose(-2, -1)) / math.sqrt(head_dim) + causal).softmax(-1) @ v
        x = x + F.linear(attention.transpose(1, 2).reshape(batch, length, hidden), w("self_attn.o_proj.weight"))
        h = rms_norm(x, w("post_attention_layernorm.weight"))
        x = x + F.linear(F.silu(F.linear(h, w("mlp.gate_proj.weight"))) * F.linear(h, w("mlp.up_proj.weight")),
                         w("mlp.down_proj.weight"))
    return F.linear(rms_norm(x, sd["model.norm.weight"]), sd["lm_head.weight"])


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def state():
    return _reference_state_dict()


@pytest.fixture(scope="module")
def inputs():
    ids = torch.tensor([[1, 3, *[IMAGE_TOKEN_ID] * NUM_PATCHES, 4, 10, 11, 6],
                        [1, 3, *[IMAGE_TOKEN_ID] * NUM_PATCHES, 4, 12, 13, 6]])
    return ids, torch.randn(2, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))


def _with_file_layer_scales(state):
    """The weights the reference runs with: its loader takes the layer scales from the DINOv2 file."""
    file = _dinov2_file(state)
    return state | {f"vision_model.{k}": v for k, v in file.items() if k.endswith(".gamma")}


def _assert_matches_reference(checkpoint, weights, inputs, atol=1e-5):
    ids, pixels = inputs
    model = LocLLMForKeypointLocalization.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels).logits
        reference = _reference_logits(weights, ids, pixels)
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    return model


# ---------------------------------------------------------------- tests


def test_imported_model_computes_the_reference_forward(state, inputs, tmp_path):
    src = _write_reference_checkpoint(tmp_path / "ref", state)
    report = import_reference_checkpoint(src, tmp_path / "ours")
    model = _assert_matches_reference(tmp_path / "ours", _with_file_layer_scales(state), inputs)
    assert "differ" in report.layer_scales and report.dropped == [
        f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(LLM["layers"])
    ]
    config = model.config
    # The DINOv2 file the reference config names exists (relative to the checkpoint) and describes the
    # tower on its own, so ours names it; the config's llama_path does not exist here.
    assert config.vision_model_name_or_path == str((src / "dinov2_tiny.pth").resolve())
    assert config.text_model_name_or_path is None
    base = load_file(tmp_path / "ours" / "base.safetensors")
    assert base and all(k.startswith("language_model.") for k in base)
    trained = load_file(tmp_path / "ours" / "trained.safetensors")
    assert len(trained) == 2 + 4 * (VISION["depth"] + LLM["layers"])  # projector + A, B on q and v
    assert (config.image_token, config.image_token_id, config.image_size) == ("<im_patch>", IMAGE_TOKEN_ID, CROP)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (LORA_R, LORA_ALPHA, 0.05)
    assert config.position_interpolation == "reference" and config.prompt_style["image_token"] == "<im_patch>"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ours")
    assert tokenizer.convert_tokens_to_ids("<im_patch>") == IMAGE_TOKEN_ID and tokenizer.pad_token == "<unk>"


def test_lora_changes_the_reference_logits(state, inputs):
    """Guards the test above: with LoRA B zeroed the reference forward gives other logits."""
    weights = _with_file_layer_scales(state)
    no_lora = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in weights.items()}
    ids, pixels = inputs
    diff = (_reference_logits(weights, ids, pixels) - _reference_logits(no_lora, ids, pixels)).abs().max()
    assert diff > 0.1


def test_merged_import_is_standalone_and_equal(state, inputs, tmp_path):
    src = _write_reference_checkpoint(tmp_path / "ref", state)
    assert main(["import-reference", str(src), str(tmp_path / "ours"), "--merge"]) == 0
    model = _assert_matches_reference(tmp_path / "ours", _with_file_layer_scales(state), inputs, atol=1e-4)
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert model.config.vision_model_name_or_path is None and model.config.text_model_name_or_path is None


def test_llm_folder_is_named_only_if_it_holds_the_checkpoints_base(state, inputs, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    src = _write_reference_checkpoint(tmp_path / "ref", state)
    fields = {k: v for k, v in _reference_config().items() if k in LlamaConfig().to_dict() and k != "rope_scaling"}
    llm = LlamaForCausalLM(LlamaConfig(**fields))
    llm.load_state_dict({k: v for k, v in state.items() if k.startswith(("model.", "lm_head."))
                         and "lora_" not in k and "rotary" not in k})
    llm.save_pretrained(tmp_path / "vicuna")
    import_reference_checkpoint(src, tmp_path / "ours", llm=tmp_path / "vicuna")
    model = _assert_matches_reference(tmp_path / "ours", _with_file_layer_scales(state), inputs)
    assert model.config.text_model_name_or_path == str((tmp_path / "vicuna").resolve())
    assert not (tmp_path / "ours" / "base.safetensors").exists()  # both bases are named

    with torch.no_grad():
        llm.model.norm.weight.add_(0.01)
    llm.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"differs from .* in model\.norm\.weight"):
        import_reference_checkpoint(src, tmp_path / "rejected", llm=tmp_path / "other")
    # The same folder found through the reference config's llama_path is not used, and said so.
    config = _reference_config(llama_path=str(tmp_path / "other"))
    (src / "config.json").write_text(json.dumps(config))
    report = import_reference_checkpoint(src, tmp_path / "standalone")
    assert "differs" in report.text_base
    assert LocLLMForKeypointLocalization.from_pretrained(tmp_path / "standalone").config.text_model_name_or_path is None


def test_sharded_safetensors_with_renamed_layer_scales_and_no_dinov2_file(state, inputs, tmp_path):
    """A re-saved checkpoint (4.31 renamed ``gamma`` to ``weight``), in shards, without the .pth: the
    layer scales then come from the checkpoint, and the tower's base is stored in ours."""
    src = _write_reference_checkpoint(tmp_path / "ref", state, dino_file=False)
    (src / "pytorch_model.bin").unlink()
    renamed = {k.replace(".gamma", ".weight"): v for k, v in state.items()}
    keys = sorted(renamed)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, names in shards.items():
        save_file({k: renamed[k].contiguous() for k in names}, src / name)
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    report = import_reference_checkpoint(src, tmp_path / "ours")
    assert report.source_files == list(shards) and report.unused == []
    assert report.layer_scales.startswith("from the checkpoint")
    model = _assert_matches_reference(tmp_path / "ours", state, inputs)
    assert model.config.vision_model_name_or_path is None


def test_unexpected_keys_are_an_error_unless_allowed(state, inputs, tmp_path, capsys):
    extra = {"vision_model.blocks.0.attn.extra_scale": torch.ones(3), "model.layers.0.self_attn.bias": torch.ones(3),
             "text_hidden_fcs.0.weight": torch.ones(2, 2)}
    src = _write_reference_checkpoint(tmp_path / "ref", state | extra)
    torch.save(_dinov2_file(state), src / "dinov2_tiny.pth")  # the pristine DINOv2 file
    assert main(["import-reference", str(src), str(tmp_path / "ours")]) == 1
    message = capsys.readouterr().err
    assert "3 reference tensors map to nothing" in message and all(key in message for key in extra)
    assert not (tmp_path / "ours").exists()

    assert main(["import-reference", str(src), str(tmp_path / "ours"), "--allow-unused"]) == 0
    printed = capsys.readouterr().out
    assert all(key in printed for key in extra)
    _assert_matches_reference(tmp_path / "ours", _with_file_layer_scales(state), inputs)


def test_missing_weights_are_an_error(state, tmp_path):
    partial = {k: v for k, v in state.items() if k != "mm_projector.bias"}
    src = _write_reference_checkpoint(tmp_path / "ref", partial)
    with pytest.raises(ValueError, match=r"does not fill 1 weights: projector\.bias"):
        import_reference_checkpoint(src, tmp_path / "ours")


def test_lora_settings_of_vision_and_llm_must_agree(state, tmp_path):
    src = _write_reference_checkpoint(tmp_path / "ref", state, config=_reference_config(lora_vision_alpha=32))
    with pytest.raises(ValueError, match="different LoRA settings"):
        import_reference_checkpoint(src, tmp_path / "ours")


def test_descriptions_are_read_as_data(state, tmp_path):
    constants = tmp_path / "constants.py"
    constants.write_text(
        "import os\n"
        "os.system('touch SHOULD_NOT_EXIST')\n"
        "COCO_KEYPOINT_NAME = ['nose', 'left knee']\n"
        "KeypointLocationDescription = {\n"
        "    'nose': 'The nose is in the middle of the face.',\n"
        "    'left knee': \"The left knee is the joint of the person's left leg.\",\n"
        "}\n"
    )
    src = _write_reference_checkpoint(tmp_path / "ref", state)
    report = import_reference_checkpoint(src, tmp_path / "ours", descriptions=constants)
    written = json.loads((tmp_path / "ours" / "descriptions.json").read_text())
    assert written == {"nose": "The nose is in the middle of the face.",
                       "left knee": "The left knee is the joint of the person's left leg."}
    assert report.num_descriptions == 2
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
