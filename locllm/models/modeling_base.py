"""What every model of ours shares: frozen pretrained bases, LoRA on some of their layers, modules of
its own that train whole, and a two-file checkpoint. In the spirit of LLaVA's ``LlavaMetaModel``: the
subclass says which modules are bases and where they load from, which layers get LoRA and what else
trains; this class does the freezing, the fp32 trained weights, the dtype cast, save and load.

A checkpoint folder holds::

    config.json           the model's config
    trained.safetensors   what training changes (LoRA, the model's own modules, any base trained whole)
    base.safetensors      the frozen base weights that no path in the config restores (tiny and demo
                          models' own bases); absent when every base is named by a path
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.utils.sha import sha_fileobj
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..bounds import check_config_sizes
from ..data.tensor_files import load_tensor_file
from .hub import resolve_pretrained

TRAINED_WEIGHTS = "trained.safetensors"
BASE_WEIGHTS = "base.safetensors"

# Keywords of transformers' from_pretrained (several passed by every Auto-class call) that have no meaning for
# our checkpoints, with the values that ask for nothing; any other value is refused, as is an unknown keyword.
# Our code is this package's (no remote code to trust), weights are safetensors, and LoRA lives in
# trained.safetensors (no adapter stacked on top).
_WITHOUT_MEANING_HERE: dict[str, tuple | Callable] = {
    "_from_auto": lambda value: True,
    "_from_pipeline": lambda value: True,
    "trust_remote_code": lambda value: True,
    "code_revision": lambda value: True,
    "_commit_hash": lambda value: True,
    "low_cpu_mem_usage": lambda value: True,
    "adapter_kwargs": lambda value: not (value or {}).get("_adapter_model_path"),
    "adapter_name": (None, "default"),
    "use_safetensors": (None, True),
    "weights_only": (True,),
    "variant": (None,),
    "gguf_file": (None,),
    "from_tf": (None, False),
    "from_flax": (None, False),
    "state_dict": (None,),
    "output_loading_info": (None, False),
    "quantization_config": (None,),
    "load_in_8bit": (None, False),
    "load_in_4bit": (None, False),
    "key_mapping": (None,),
    "tp_plan": (None,),
    "tp_size": (None,),
    "device_mesh": (None,),
    "offload_folder": (None,),
    "offload_state_dict": (None, False),
    "max_memory": (None,),
    "use_kernels": (None, False),
    "generation_config": (None,),
}


def read_checkpoint_config(folder: str | Path, config_class: type[PretrainedConfig]) -> PretrainedConfig:
    """A checkpoint folder's ``config.json``, checked to be of ``config_class``'s model type."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a {config_class.model_type} checkpoint (no config.json)")
    try:
        config = config_class.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:  # malformed JSON, or fields of another model
        raise ValueError(f"{folder / 'config.json'} is not a readable {config_class.model_type} config "
                         f"({str(err).strip().splitlines()[0]}): re-save or re-download the checkpoint") from None
    if config.model_type != config_class.model_type:
        raise ValueError(f"{folder}: config model_type is {config.model_type!r}, expected {config_class.model_type!r}")
    return config


def files_sha256(folder: str | Path, paths) -> str:
    """A short sha256 over the names (relative to ``folder``) and contents of ``paths``, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as file:
            digest.update(f"{Path(path).relative_to(folder).as_posix()}\0".encode() + sha_fileobj(file))
    return digest.hexdigest()[:16]


def checkpoint_weights_sha256(folder: str | Path) -> str:
    """A short sha256 of what a checkpoint's raw answers depend on: its ``config.json`` and weight files
    (what is fitted to those answers, such as a calibration, records it)."""
    folder = Path(folder)
    return files_sha256(folder, [folder / name for name in ("config.json", BASE_WEIGHTS, TRAINED_WEIGHTS)
                                 if (folder / name).is_file()])


def read_checkpoint_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (safetensors only): its base weights, where written, and its
    trained ones; empty when it holds neither file."""
    state = {}
    for name in (BASE_WEIGHTS, TRAINED_WEIGHTS):
        if (Path(folder) / name).is_file():
            state.update(load_tensor_file(Path(folder) / name))
    return state


@dataclass(frozen=True)
class BaseSpec:
    """One pretrained base of a model: the attribute holding it, the config fields naming its weights and
    its config, and how to load it from that path (called with HF keywords: dtype, device_map, ..., and
    those ``load_kwargs`` reads from the model's config, such as a number of layers to keep)."""

    attribute: str
    path_field: str
    config_field: str
    load: Callable[..., nn.Module]
    load_kwargs: Callable[[PretrainedConfig], dict] = lambda config: {}


class PreTrainedModelOnBases(PreTrainedModel):
    """A PreTrainedModel made of frozen bases plus modules of its own; see the module docstring.

    A subclass sets ``bases`` (its :class:`BaseSpec` list), ``own_modules`` (attributes that always
    train and are saved whole, buffers included) and ``trained_whole_when`` (config flag -> name prefixes
    of base modules that train whole, not through LoRA, when the flag is set), implements
    ``lora_targets``, and calls ``self.freeze_bases_and_add_lora()`` at the end of ``__init__``.
    """

    bases: tuple[BaseSpec, ...] = ()
    own_modules: tuple[str, ...] = ()
    trained_whole_when: dict[str, tuple[str, ...]] = {}

    # ---------------------------------------------------------------- what trains

    def lora_targets(self) -> dict[str, tuple[str, ...]]:
        """Module -> suffixes of the layer names inside it that get LoRA (e.g. a tower's q/v projections)."""
        raise NotImplementedError

    def freeze_bases_and_add_lora(self) -> None:
        """Freeze the bases, put LoRA on the targets (B = 0: the model starts as its bases) and mark
        what trains: LoRA, the model's own modules and any base the config trains whole."""
        for spec in self.bases:
            getattr(self, spec.attribute).requires_grad_(False)
        patterns = [rf"{re.escape(module)}\..*{re.escape(suffix)}"
                    for module, suffixes in self.lora_targets().items() for suffix in suffixes]
        if patterns:
            lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                              lora_dropout=self.config.lora_dropout,
                              target_modules="|".join(f"(?:{p})" for p in patterns))
            inject_adapter_in_model(lora, self)
        trained = tuple(f"{name}." for name in self.own_modules)
        for flag, prefixes in self.trained_whole_when.items():
            trained += prefixes if getattr(self.config, flag) else ()
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith(trained) or "lora_" in name
        self._keep_trainable_fp32()

    def _keep_trainable_fp32(self) -> None:
        """Frozen bases may be bf16; what trains stays fp32 so small updates are not rounded away."""
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32 and param.device.type != "meta":
                param.data = param.data.float()

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: trainable parameters, and the own modules' buffers (batch-norm statistics)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        own = tuple(f"{name}." for name in self.own_modules)
        return {n: t.detach() for n, t in self.state_dict().items() if n in trainable or n.startswith(own)}

    def to_base_dtype(self, dtype: torch.dtype) -> PreTrainedModelOnBases:
        """Cast the frozen bases to ``dtype`` (e.g. bf16 on a GPU); trained weights stay fp32."""
        for param in self.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
        return self

    # ---------------------------------------------------------------- construction

    def base_paths(self) -> dict[str, str | None]:
        """Name prefix of each base -> the path its weights load from (``None``: stored in the checkpoint)."""
        return {f"{spec.attribute}.": getattr(self.config, spec.path_field) for spec in self.bases}

    @classmethod
    def from_bases(cls, config: PretrainedConfig, **base_kwargs):
        """A fresh model (own modules random, LoRA B = 0) on the pretrained bases the config names.

        ``base_kwargs`` (``dtype``, ``device_map``, ``attn_implementation``) go to each base's loader; the
        config takes each loaded base's config.
        """
        loaded = {}
        for spec in cls.bases:
            path = getattr(config, spec.path_field)
            if path:
                loaded[spec.attribute] = spec.load(path, **base_kwargs, **spec.load_kwargs(config))
                setattr(config, spec.config_field, loaded[spec.attribute].config)
        return cls(config, **loaded)

    # ---------------------------------------------------------------- checkpoints

    def save_pretrained(self, save_directory: str | Path, *, merge: bool = False, is_main_process: bool = True,
                        safe_serialization: bool = True, **kwargs) -> None:
        """Write ``config.json``, the trained weights, and the base weights no path in the config restores.

        With ``merge=True`` LoRA is folded into the bases and the whole model is written standalone.
        ``is_main_process=False`` writes nothing (the other processes of a distributed run). Weights are
        always safetensors; other Hugging Face keywords (sharding, hub upload) are refused.
        """
        if kwargs:
            raise TypeError(f"{type(self).__name__}.save_pretrained() does not support {', '.join(sorted(kwargs))}")
        if not safe_serialization:
            raise ValueError("checkpoints are written as safetensors only (safe_serialization=False is refused)")
        if not is_main_process:
            return
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if merge:
            return self._save_merged(out)
        self.config.save_pretrained(out)
        trained = {k: v.contiguous() for k, v in self.trained_state_dict().items()}
        save_file(trained, out / TRAINED_WEIGHTS)
        stored = tuple(prefix for prefix, path in self.base_paths().items() if path is None)
        base = {k: v.contiguous() for k, v in self.state_dict().items()
                if k.startswith(stored) and k not in trained and "lora_" not in k}
        if base:
            save_file(_untie(base), out / BASE_WEIGHTS)

    def _save_merged(self, out: Path) -> None:
        from peft.tuners.lora import LoraLayer

        merged = self.__class__(self.config.__class__.from_dict(self.config.to_dict()))
        merged.load_state_dict(self.state_dict())
        for module in merged.modules():
            if isinstance(module, LoraLayer):
                module.merge()
        state = {key.replace(".base_layer.", "."): value.contiguous()
                 for key, value in merged.state_dict().items() if "lora_" not in key}
        config = merged.config
        for spec in self.bases:
            setattr(config, spec.path_field, None)
        config.lora_vision = config.lora_text = False
        config.save_pretrained(out)
        save_file(_untie(state), out / BASE_WEIGHTS)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args,
                        config: PretrainedConfig | str | os.PathLike | None = None,
                        dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
                        device_map: str | int | torch.device | None = None, attn_implementation: str | None = None,
                        cache_dir: str | os.PathLike | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None, revision: str | None = None,
                        proxies: dict[str, str] | None = None, subfolder: str = "", **kwargs):
        """Rebuild the model from its bases and load the checkpoint's weights (safetensors only).

        Args:
            pretrained_model_name_or_path: a checkpoint folder (see the module docstring) or a Hugging Face Hub
                repo id holding one.
            config: use this config (or the config of this folder) instead of the checkpoint's ``config.json``.
            dtype: of the frozen bases (a ``torch.dtype`` or its name, e.g. ``"bfloat16"``); trained
                weights stay fp32. ``torch_dtype`` is its older name.
            device / device_map: the one device the model goes to (named bases are loaded there).
            attn_implementation: ``"sdpa"``, ``"eager"``, ... for both bases.
            cache_dir, force_download, local_files_only, token, revision, proxies, subfolder: where a repo id's
                files come from, as in transformers (see :func:`~locllm.models.hub.resolve_pretrained`).

        Every other keyword transformers' ``from_pretrained`` takes is accepted at its default value (the Auto
        classes pass several); a value that asks for what a two-file safetensors checkpoint cannot do (another
        weights format, quantization, an adapter on top, returned loading info, ...) is one clear error. A keyword
        transformers does not know either is a TypeError.
        """
        dtype = _accept_transformers_kwargs(cls, model_args, kwargs, dtype)
        folder = resolve_pretrained(pretrained_model_name_or_path, cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token, revision=revision,
                                    proxies=proxies, subfolder=subfolder)
        if config is None or isinstance(config, (str, os.PathLike)):
            config = read_checkpoint_config(folder if config is None else Path(config), cls.config_class)
        elif not isinstance(config, cls.config_class):
            raise TypeError(f"config must be a {cls.config_class.__name__}, got {type(config).__name__}")
        try:
            check_config_sizes(config.to_dict())
        except ValueError as err:  # before a tensor of that size is allocated
            raise ValueError(f"{folder / 'config.json'}: {err}") from None
        device = _one_device(device, device_map)
        dtype = _torch_dtype(dtype)
        base_kwargs = {"dtype": dtype}
        if device is not None:
            base_kwargs["device_map"] = device
        if attn_implementation is not None:
            base_kwargs["attn_implementation"] = attn_implementation
            config._attn_implementation = attn_implementation  # reaches every sub-config, is not saved
        model = cls.from_bases(config, **base_kwargs)
        model._load_checkpoint_tensors(folder)
        if dtype is not None:
            model.to_base_dtype(dtype)
        return model.to(device) if device is not None else model

    def _load_checkpoint_tensors(self, folder: Path) -> None:
        """Load the folder's weights; every trained weight and every base weight no path restores must be there."""
        missing, unexpected = self.load_state_dict(_retie(read_checkpoint_tensors(folder), self), strict=False)
        trained = self.trained_state_dict()
        restored = tuple(prefix for prefix, path in self.base_paths().items() if path is not None)
        ignored = [re.compile(p) for p in self._keys_to_ignore_on_load_missing or ()]
        trained_missing = [k for k in missing if k in trained]
        base_missing = [k for k in missing if k not in trained and not k.startswith(restored)
                        and not any(p.search(k) for p in ignored)]
        if trained_missing and not (folder / TRAINED_WEIGHTS).is_file():
            raise FileNotFoundError(f"{folder} has no {TRAINED_WEIGHTS}: not a complete checkpoint (an interrupted "
                                    "copy?); copy or re-save it whole")
        if unexpected or trained_missing or base_missing:
            raise KeyError(
                f"{folder}: checkpoint does not match the model: unexpected {unexpected[:5]}, "
                f"missing trained {trained_missing[:5]}, missing base {base_missing[:5]}"
            )
        self._keep_trainable_fp32()


def _accept_transformers_kwargs(cls: type, model_args: tuple, kwargs: dict, dtype):
    """The ``dtype`` asked (``torch_dtype`` is its older name), once every other keyword is known to ask for
    nothing this model cannot give; see :meth:`PreTrainedModelOnBases.from_pretrained`."""
    if model_args:
        raise TypeError(f"{cls.__name__}.from_pretrained() takes no positional model arguments (the config says all)")
    older_dtype = kwargs.pop("torch_dtype", None)
    if older_dtype is not None:
        if dtype is not None:
            raise TypeError("give dtype or torch_dtype, not both")
        dtype = older_dtype
    unknown = sorted(k for k in kwargs if k not in _WITHOUT_MEANING_HERE)
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained() does not support {', '.join(unknown)}")
    for name, value in kwargs.items():
        accepted = _WITHOUT_MEANING_HERE[name]
        if not (accepted(value) if callable(accepted) else value in accepted):
            raise TypeError(f"{cls.__name__}.from_pretrained() does not support {name}={value!r}: "
                            f"a {cls.config_class.model_type} checkpoint is {TRAINED_WEIGHTS} (+ {BASE_WEIGHTS}) "
                            "loaded as it is; leave it out")
    if dtype == "auto":  # transformers: the checkpoint's own dtype; ours are fp32 with bases as loaded
        dtype = None
    return dtype


def _one_device(device, device_map) -> torch.device | None:
    """``device`` or ``device_map``, which must name a single device (our bases and LoRA share one)."""
    if device is not None and device_map is not None:
        raise TypeError("give device or device_map, not both")
    where = device if device is not None else device_map
    if where is None:
        return None
    if isinstance(where, dict) or where in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map must name one device (e.g. 'cuda:0'), got {where!r}")
    return torch.device(where)


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(getattr(torch, str(dtype), None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(f"dtype must be a torch.dtype or its name (e.g. 'bfloat16'), got {dtype!r}")


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep one copy of each."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        if value.data_ptr() not in seen:
            seen.add(value.data_ptr())
            out[key] = value
    return out


def _retie(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fill the keys ``_untie`` dropped from the tensor they shared in the model."""
    by_ptr: dict[int, list[str]] = {}
    for key, value in model.state_dict().items():
        by_ptr.setdefault(value.data_ptr(), []).append(key)
    for keys in by_ptr.values():
        present = [k for k in keys if k in state]
        if present:
            for k in keys:
                state.setdefault(k, state[present[0]])
    return state


__all__ = ["BASE_WEIGHTS", "TRAINED_WEIGHTS", "BaseSpec", "PreTrainedModelOnBases", "checkpoint_weights_sha256", "files_sha256",
           "read_checkpoint_config", "read_checkpoint_tensors"]
