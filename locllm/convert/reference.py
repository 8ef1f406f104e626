"""Import a checkpoint of the reference release (github kennethwdk/LocLLM) as a LocLLM checkpoint of ours.

The reference saves the full state dict of its ``LlamaForCausalLM`` subclass next to a
``config.json`` (Llama fields plus ``llama_path``, ``dino_path``, ``lora_*``, ``crop_size``,
``im_patch_token``) and its tokenizer (``<im_patch>`` added as id 32000)::

    model.* / lm_head.*             the LLM, Llama names; LoRA as ``{q,v}_proj.lora_A`` / ``lora_B``
    vision_model.*                  DINOv2, timm names (fused ``attn.qkv``, ``ls1.gamma``); LoRA on the
                                    q and v thirds of qkv as ``attn.lora_A_q`` / ``lora_B_q`` / ``_v``
    mm_projector.weight / .bias     the linear projector

Every tensor is mapped by the tables below onto ``LocLLMForKeypointLocalization`` and written with its
``save_pretrained``. Both LoRA layouts compute ``base(x) + B(A(dropout(x))) * alpha / r``, which is
peft's LoRA, so A and B are copied unchanged.

Where the frozen bases come from:

- LLM: a Hugging Face folder that holds exactly the checkpoint's copy of the base is named in our
  config (``text_model_name_or_path``): the one given with ``llm`` (an error if it differs) or the
  reference config's ``llama_path`` where it exists. Otherwise the checkpoint's copy goes into our
  ``base.safetensors`` and the checkpoint stands alone, with no folder path that must stay valid.
- Vision: the DINOv2 ``.pth`` given with ``dino`` (or the config's ``dino_path``) supplies the layer
  scales, as in the reference, whose loader renames every ``gamma`` key so that the checkpoint's own
  layer scales are never read. The file is named in our config when a tower read from it alone is this
  tower (same weights, and the head count ``load_reference_dinov2`` derives: width / 64); otherwise, and
  without a file, the tower's base goes into ``base.safetensors``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from ..data.outputs import check_output_folder, staged_folder
from ..data.tensor_files import load_tensor_file
from ..keypoints import load_reference_constants
from ..models import BASE_WEIGHTS, CLIP_MEAN, CLIP_STD, LocLLMConfig, LocLLMForKeypointLocalization
from ..models.processing_locllm import DESCRIPTIONS_FILE, LocLLMProcessor
from ..models.reference_dinov2 import (
    convert_reference_dinov2_state_dict,
    read_reference_dinov2,
    reference_dinov2_config,
)
from ..models.vision import build_vision_tower
from ..prompts import PromptStyle

IMAGE_TOKEN = "<im_patch>"  # the reference's DEFAULT_IMAGE_PATCH_TOKEN

# Fields of the reference config that describe LocLLM rather than its Llama base; all are required.
_LOCLLM_FIELDS = (
    "llama_path", "dino_path", "crop_size", "im_patch_token",
    "lora_llm_enable", "lora_llm_r", "lora_llm_alpha", "lora_llm_dropout",
    "lora_vision_enable", "lora_vision_r", "lora_vision_alpha", "lora_vision_dropout",
)
# Written by the run that saved the config; they say nothing about the architecture.
_RUN_FIELDS = ("_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype",
               "use_cache", "num_patches")

# Reference tensor name -> our name. Keys not matched by any of these are reported as unused.
_LLM_LORA = re.compile(r"model\.layers\.(\d+)\.self_attn\.([qv])_proj\.lora_([AB])")
_VISION_LORA = re.compile(r"vision_model\.blocks\.(\d+)\.attn\.lora_([AB])_([qv])")
# transformers 4.31 renames "gamma" to "weight" at load time, so a re-saved checkpoint may carry either.
_LAYER_SCALE = re.compile(r"blocks\.(\d+)\.ls([12])\.(gamma|weight)")
# Rotary frequencies: a buffer computed from the config, not a weight.
_ROTARY_BUFFER = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
_PROJECTOR = {"mm_projector.weight": "projector.weight", "mm_projector.bias": "projector.bias"}
_LLM_PREFIXES = ("model.", "lm_head.")


@dataclass
class ReferenceTensors:
    """A reference state dict sorted by destination, already under our names."""

    vision_base: dict[str, torch.Tensor] = field(default_factory=dict)  # reference DINOv2 names, no prefix
    model: dict[str, torch.Tensor] = field(default_factory=dict)  # LocLLM names: LLM, LoRA, projector
    dropped: list[str] = field(default_factory=list)  # reference keys that hold no weights
    unused: list[str] = field(default_factory=list)  # reference keys no table maps


@dataclass
class ImportReport:
    """What ``import_reference_checkpoint`` read, mapped and wrote."""

    source_files: list[str]
    num_tensors: int
    num_mapped: int
    dropped: list[str]
    unused: list[str]
    layer_scales: str
    text_base: str
    vision_base: str
    tokenizer_size: int
    num_descriptions: int | None

    def lines(self) -> list[str]:
        out = [
            f"read {self.num_tensors} tensors from {', '.join(self.source_files)}",
            f"mapped {self.num_mapped}; dropped {len(self.dropped)} rotary buffers (recomputed from the config)",
            f"unused ({len(self.unused)}): " + (", ".join(self.unused) if self.unused else "none"),
            "not filled: none",
            f"vision layer scales: {self.layer_scales}",
            f"LLM base: {self.text_base}",
            f"vision base: {self.vision_base}",
            f"tokenizer: {self.tokenizer_size} tokens, {IMAGE_TOKEN} included",
        ]
        if self.num_descriptions is not None:
            out.append(f"descriptions: {self.num_descriptions} written to {DESCRIPTIONS_FILE}")
        return out


def weight_files(folder: Path) -> list[Path]:
    """The weight shards of a Hugging Face style folder: index files first, then single files."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no pytorch_model*.bin or *.safetensors weights found")
    return files


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    # mmap: a 7B state dict is paged in as it is used instead of read into memory at once.
    return load_tensor_file(path, mmap=True)


def load_reference_state_dict(folder: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """All tensors of a checkpoint folder (every shard) and the names of the files read."""
    files = weight_files(Path(folder))
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = _load_weight_file(path)
        repeated = state.keys() & part.keys()
        if repeated:
            raise ValueError(f"{path.name} repeats tensors of an earlier shard: {sorted(repeated)}")
        state.update(part)
    return state, [p.name for p in files]


def split_reference_state_dict(state: dict[str, torch.Tensor]) -> ReferenceTensors:
    """Rename every reference tensor (LLM names are completed against the model in ``_model_names``)."""
    out = ReferenceTensors()
    for key, value in state.items():
        if _ROTARY_BUFFER.fullmatch(key):
            out.dropped.append(key)
        elif key in _PROJECTOR:
            out.model[_PROJECTOR[key]] = value
        elif match := _LLM_LORA.fullmatch(key):
            layer, proj, ab = match.groups()
            out.model[f"language_model.model.layers.{layer}.self_attn.{proj}_proj.lora_{ab}.default.weight"] = value
        elif match := _VISION_LORA.fullmatch(key):
            layer, ab, proj = match.groups()
            out.model[f"vision_tower.encoder.layer.{layer}.attention.{proj}_proj.lora_{ab}.default.weight"] = value
        elif key.startswith(_LLM_PREFIXES):
            out.model["language_model." + key] = value
        elif key.startswith("vision_model."):
            name = key.removeprefix("vision_model.")
            if match := _LAYER_SCALE.fullmatch(name):
                name = f"blocks.{match[1]}.ls{match[2]}.gamma"
            try:
                convert_reference_dinov2_state_dict({name: value})  # raises KeyError for a name it has no entry for
            except KeyError:
                out.unused.append(key)
            else:
                out.vision_base[name] = value
        else:
            out.unused.append(key)
    return out


def _differing(ours: dict[str, torch.Tensor], theirs, names) -> list[str]:
    """Names whose tensors differ (compared in our dtype: the checkpoint may hold a cast of the base)."""
    out = []
    for name in names:
        if name not in theirs:
            out.append(f"{name} (absent)")
            continue
        mine, other = ours[name], theirs[name]
        if mine.shape != other.shape or not torch.equal(mine, other.to(mine.dtype)):
            out.append(name)
    return out


def _llm_base_differences(llm: dict[str, torch.Tensor], folder: Path) -> list[str]:
    """Compare the checkpoint's LLM base with a Hugging Face folder, one shard at a time."""
    differing = []
    remaining = set(llm)
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as shard:
                names = remaining & set(shard.keys())
                differing += _differing(llm, {n: shard.get_tensor(n) for n in names}, names)
        else:
            shard = _load_weight_file(path)
            names = remaining & shard.keys()
            differing += _differing(llm, shard, names)
        remaining -= names
    return differing + [f"{name} (absent)" for name in sorted(remaining)]


def _existing(value: str | None, src: Path) -> Path | None:
    """A base path from the reference config, as written or relative to the checkpoint folder."""
    if not value:
        return None
    for candidate in (Path(value), src / value):
        if candidate.exists():
            return candidate.resolve()
    return None


def locllm_config_from_reference(ref: dict, vision_base: dict[str, torch.Tensor], vision_heads: int | None,
                                 coordinate_ndim: int = 2) -> LocLLMConfig:
    """Our config for a reference checkpoint: its Llama fields, its tower's shapes, its LoRA and image settings."""
    missing = [k for k in _LOCLLM_FIELDS if k not in ref]
    if missing:
        raise ValueError(f"not a reference LocLLM config.json: it lacks {missing}")
    llama_fields = {
        k: v for k, v in ref.items()
        # rope_scaling None is the default; passing it only triggers a deprecation warning in transformers 5.
        if k not in _LOCLLM_FIELDS and k not in _RUN_FIELDS and not (k == "rope_scaling" and v is None)
    }
    vision_config = reference_dinov2_config(vision_base)
    if vision_heads is not None:
        vision_config.num_attention_heads = vision_heads
    if vision_config.hidden_size % vision_config.num_attention_heads:
        raise ValueError(f"vision width {vision_config.hidden_size} is not divisible by "
                         f"{vision_config.num_attention_heads} heads")

    enabled = {part: (ref[f"lora_{part}_r"], ref[f"lora_{part}_alpha"], ref[f"lora_{part}_dropout"])
               for part in ("llm", "vision") if ref[f"lora_{part}_enable"]}
    if len(set(enabled.values())) > 1:
        raise ValueError(f"the reference uses different LoRA settings (r, alpha, dropout) for the LLM "
                         f"{enabled['llm']} and the vision tower {enabled['vision']}; our config holds one set")
    r, alpha, dropout = next(iter(enabled.values()), (ref["lora_llm_r"], ref["lora_llm_alpha"], ref["lora_llm_dropout"]))
    return LocLLMConfig(
        vision_config=vision_config,
        text_config=LlamaConfig(**llama_fields),
        projector_type="linear",
        image_token=IMAGE_TOKEN,
        image_token_id=ref["im_patch_token"],
        image_size=ref["crop_size"],
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        position_interpolation="reference",
        lora_vision=ref["lora_vision_enable"],
        lora_text=ref["lora_llm_enable"],
        lora_r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        prompt_style=PromptStyle.reference().to_dict(),
        coordinate_ndim=coordinate_ndim,
        tie_word_embeddings=ref.get("tie_word_embeddings", False),
    )


def _model_names(model_state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict, list[str]]:
    """Our names as the LoRA-wrapped model spells them (``q_proj.weight`` -> ``q_proj.base_layer.weight``)."""
    named, unknown = {}, []
    for key, value in model_state.items():
        stem, _, kind = key.rpartition(".")
        wrapped = f"{stem}.base_layer.{kind}"
        if key in model_keys:
            named[key] = value
        elif wrapped in model_keys:
            named[wrapped] = value
        else:
            unknown.append(key)
    return named, unknown


def _import_tokenizer(source: Path, image_token_id: int):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, ImportError) as err:
        raise ValueError(
            f"cannot load a tokenizer from {source} ({err}); give a tokenizer folder with --tokenizer "
            "(e.g. a Llama-2 tokenizer.json; the reference's tokenizer.model needs sentencepiece)"
        ) from err
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)  # as the reference's initialize_vision_tokenizer
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != image_token_id:
        raise ValueError(f"the tokenizer maps {IMAGE_TOKEN} to {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}, "
                         f"the checkpoint's im_patch_token is {image_token_id}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # the reference pads with <unk>
    return tokenizer


def _layer_scales_from_file(vision_base: dict, file_state: dict, dino_file: Path) -> str:
    """Put the file's layer scales into ``vision_base``, as the reference's loader does; say what changed."""
    names = [n for n in vision_base if _LAYER_SCALE.fullmatch(n)]
    absent = [n for n in names if n not in file_state]
    if absent:
        raise ValueError(f"{dino_file} lacks the layer scales {', '.join(absent)}: not this tower's DINOv2 file")
    differ = _differing(vision_base, file_state, names)
    vision_base.update({n: file_state[n] for n in names})
    own = f"the checkpoint's own differ: {', '.join(differ)}" if differ else "equal to the checkpoint's"
    return f"from {dino_file}, as the reference loads them ({own})"


def _build_model(config: LocLLMConfig, tensors: ReferenceTensors,
                 allow_unused: bool) -> tuple[LocLLMForKeypointLocalization, int]:
    """Our model holding the reference's tensors (assigned, not copied); also the number of tensors mapped.

    The tower is built for real: the model's constructor initializes every module that is not yet, which
    would overwrite assigned weights, and it resamples the tower's position grid. The LLM is built on the
    meta device (a 7B model is never initialized just to be overwritten) and assigned afterwards; its
    rotary buffers stay on meta, so this model is for writing only: load the result with from_pretrained.
    """
    tower = build_vision_tower(config.vision_config)
    missing_vision, _ = tower.load_state_dict(
        convert_reference_dinov2_state_dict(tensors.vision_base), strict=False, assign=True
    )
    with torch.device("meta"):
        language_model = AutoModelForCausalLM.from_config(config.text_config)
    model = LocLLMForKeypointLocalization(config, vision_tower=tower, language_model=language_model)
    expected = model.state_dict()
    model_state, unknown = _model_names(tensors.model, set(expected))
    tensors.unused += unknown
    if tensors.unused and not allow_unused:
        raise ValueError(f"{len(tensors.unused)} reference tensors map to nothing in our model "
                         f"(pass --allow-unused to import anyway): {', '.join(tensors.unused)}")
    mismatched = [k for k, v in model_state.items() if v.shape != expected[k].shape]
    if mismatched:
        raise ValueError(f"tensors with shapes the config does not give: {', '.join(mismatched)}")
    model_state = {  # what trains is kept in fp32, as in every checkpoint of ours
        k: v.float() if "lora_" in k or k.startswith("projector.") else v for k, v in model_state.items()
    }
    missing, _ = model.load_state_dict(model_state, strict=False, assign=True)
    # The tower's base was loaded above; any other missing key is a weight the checkpoint lacks.
    not_filled = [f"vision_tower.{k}" for k in missing_vision] + [
        k for k in missing if not k.startswith("vision_tower.") or "lora_" in k
    ]
    if not_filled:
        raise ValueError(f"the checkpoint does not fill {len(not_filled)} weights: {', '.join(not_filled)}")
    return model, len(tensors.vision_base) + len(model_state)


def _name_text_base(config: LocLLMConfig, tensors: ReferenceTensors, folder: Path, given: bool) -> str | None:
    """Name ``folder`` as the LLM base if it holds the checkpoint's base; a reason why not otherwise."""
    base = {k.removeprefix("language_model."): v for k, v in tensors.model.items()
            if k.startswith("language_model.") and "lora_" not in k}
    differ = _llm_base_differences(base, folder)
    if not differ:
        config.text_model_name_or_path = str(folder.resolve())
        return None
    reason = f"the checkpoint's LLM base differs from {folder} in {', '.join(differ)}"
    if given:
        raise ValueError(reason + "; leave out --llm to keep the checkpoint's own")
    return reason


def _name_vision_base(config: LocLLMConfig, vision_base: dict, file_state: dict, dino_file: Path) -> str | None:
    """Name ``dino_file`` as the vision base if a tower read from it alone is ours; a reason why not otherwise."""
    differ = _differing(vision_base, file_state, vision_base)
    differ += [f"{name} (only in the file)" for name in sorted(file_state.keys() - vision_base.keys())]
    if differ:
        return f"{dino_file} differs in {', '.join(differ)}"
    file_heads = reference_dinov2_config(file_state).num_attention_heads
    if file_heads != config.vision_config.num_attention_heads:
        return (f"a tower read from {dino_file} alone gets {file_heads} heads, "
                f"this one has {config.vision_config.num_attention_heads}")
    config.vision_model_name_or_path = str(dino_file.resolve())
    return None


def import_reference_checkpoint(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    dino: str | Path | None = None,
    llm: str | Path | None = None,
    tokenizer: str | Path | None = None,
    descriptions: str | Path | None = None,
    vision_heads: int | None = None,
    coordinate_ndim: int = 2,
    merge: bool = False,
    allow_unused: bool = False,
    overwrite: bool = False,
) -> ImportReport:
    """Convert the reference checkpoint in ``src_dir`` into our checkpoint in ``out_dir``.

    Args:
        dino / llm: the base DINOv2 ``.pth`` and LLM folder (an error if the checkpoint's base differs);
            default: the reference config's ``dino_path`` and ``llama_path`` where they exist (as written
            or relative to ``src_dir``), used only if they hold the checkpoint's bases.
        tokenizer: a tokenizer folder to use instead of ``src_dir``'s (``<im_patch>`` is added if absent).
        descriptions: the reference's ``datasets/constants.py``; its description table (read as data,
            never executed) is written to ``out_dir/descriptions.json`` so prompts match the reference.
        vision_heads: attention heads of the vision tower (default: width / 64, ViT-L's 16).
        coordinate_ndim: 3 for the Human3.6M checkpoints, which answer (x, y, depth).
        merge: fold LoRA into the bases and write a standalone model.
        allow_unused: import even if some reference tensors map to nothing (they are reported).
        overwrite: replace a non-empty ``out_dir`` as a whole (refused before any work without it). The
            checkpoint is written into a temporary sibling folder and renamed into place when complete, so a
            failed or interrupted import leaves nothing that loads, and a replaced one no stale file.
    """
    src, out = Path(src_dir), Path(out_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json: not a reference checkpoint folder")
    for given in (dino, llm, tokenizer, descriptions):
        if given is not None and not Path(given).exists():
            raise FileNotFoundError(f"{given} does not exist")
    check_output_folder(out, overwrite, "import-reference output folder")
    try:
        ref = json.loads((src / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{src / 'config.json'} is not valid JSON ({err}): not a reference checkpoint, or a "
                         "damaged copy of one") from None
    state, source_files = load_reference_state_dict(src)
    tensors = split_reference_state_dict(state)
    dino_file = Path(dino) if dino else _existing(ref.get("dino_path"), src)
    llm_folder = Path(llm) if llm else _existing(ref.get("llama_path"), src)

    layer_scales = "from the checkpoint (no DINOv2 file found)"
    file_state = None
    if dino_file is not None:
        file_state = read_reference_dinov2(dino_file)
        layer_scales = _layer_scales_from_file(tensors.vision_base, file_state, dino_file)
    config = locllm_config_from_reference(ref, tensors.vision_base, vision_heads, coordinate_ndim)
    model, num_mapped = _build_model(config, tensors, allow_unused)

    stored = f"stored in {out / BASE_WEIGHTS}"
    text_base = vision_base = stored
    if llm_folder is not None:
        why_not = _name_text_base(config, tensors, llm_folder, given=llm is not None)
        text_base = f"{stored} ({why_not})" if why_not else f"named: {config.text_model_name_or_path}"
    if file_state is not None:
        why_not = _name_vision_base(config, tensors.vision_base, file_state, dino_file)
        vision_base = f"{stored} ({why_not})" if why_not else f"named: {config.vision_model_name_or_path}"
    if merge:
        text_base = vision_base = f"merged with LoRA into {out / BASE_WEIGHTS}"
    tok = _import_tokenizer(Path(tokenizer) if tokenizer else src, config.image_token_id)
    table = load_reference_constants(descriptions)["descriptions"] if descriptions is not None else None
    with staged_folder(out) as staging:
        model.save_pretrained(staging, merge=merge)
        processor = LocLLMProcessor.from_config(config, tok)
        processor.descriptions = table
        processor.save_pretrained(staging)
    num_descriptions = len(table) if table is not None else None
    return ImportReport(
        source_files=source_files,
        num_tensors=len(state),
        num_mapped=num_mapped,
        dropped=tensors.dropped,
        unused=tensors.unused,
        layer_scales=layer_scales,
        text_base=text_base,
        vision_base=vision_base,
        tokenizer_size=len(tok),
        num_descriptions=num_descriptions,
    )
