"""LocLLM configuration: vision tower + projector + causal LM, LoRA placement, image and prompt settings."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The reference normalizes with CLIP's statistics, for DINOv2 too; checkpoints trained on it
# must see the same numbers, so they are the default.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# LoRA goes on the query and value projections of every attention layer; these are their module names
# in each supported family (peft matches them as name suffixes).
DEFAULT_VISION_LORA_TARGETS = {
    "dinov2": ("attention.q_proj", "attention.v_proj"),
    "clip_vision_model": ("self_attn.q_proj", "self_attn.v_proj"),
    "siglip_vision_model": ("self_attn.q_proj", "self_attn.v_proj"),
}
DEFAULT_TEXT_LORA_TARGETS = ("self_attn.q_proj", "self_attn.v_proj")


class LocLLMConfig(PretrainedConfig):
    r"""Configuration of [`LocLLMForKeypointLocalization`].

    Args:
        vision_config / text_config: configs of the vision tower (any HF vision backbone: Dinov2, CLIP
            or SigLIP vision) and of the causal LM (Llama, SmolLM2, Qwen2, ...).
        vision_model_name_or_path / text_model_name_or_path: where the frozen base weights come from
            (a local folder, or for the vision tower also a reference DINOv2 ``.pth``). When ``None`` the
            base weights live in the checkpoint itself (tiny and demo models). ``smollm2`` names the
            installed SmolLM2-135M (``locllm.models.gguf``).
        text_num_layers: keep only the first N decoder layers of the LM loaded from
            ``text_model_name_or_path`` (a faster, shallower pretrained LM); ``None``: all of them.
        projector_type: ``"linear"`` (the paper) or ``"mlp2x_gelu"``.
        image_token / image_token_id: the placeholder token the image features replace.
        image_size: side of the square crop the vision tower sees (224 in the paper).
        image_mean / image_std: pixel normalization.
        position_interpolation: ``"reference"`` resizes a tower's position grid to ``image_size`` once,
            with DINOv2's original bicubic rule (the one the reference checkpoints were trained with);
            ``"hf"`` leaves it to the tower's own interpolation at run time.
        lora_vision / lora_text: LoRA in the vision tower / the LM; ``lora_r``, ``lora_alpha``,
            ``lora_dropout``; ``vision_lora_targets`` / ``text_lora_targets`` module-name suffixes
            (``None``: query and value of every attention layer).
        train_vision_base / train_text_base: train all weights of the tower / the LM instead of only
            LoRA (for towers or LMs without pretraining, such as the CPU demo's tiny LM).
        prompt_style: the conversation format (``locllm.prompts.PromptStyle`` as a dict).
        coordinate_ndim: 2, or 3 for the Human3.6M models.
        coordinate_codec: how coordinates are written (``locllm.codecs.build_codec`` dict); ``None``
            is the paper's decimal text with ``coordinate_ndim`` values.
    """

    model_type = "locllm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    vision_model_name_or_path: str | None = None
    text_model_name_or_path: str | None = None
    text_num_layers: int | None = None
    projector_type: str = "linear"
    image_token: str = "<image>"
    image_token_id: int | None = None
    image_size: int = 224
    image_mean: tuple[float, ...] | list[float] = CLIP_MEAN
    image_std: tuple[float, ...] | list[float] = CLIP_STD
    position_interpolation: str = "reference"
    lora_vision: bool = True
    lora_text: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    vision_lora_targets: tuple[str, ...] | list[str] | None = None
    text_lora_targets: tuple[str, ...] | list[str] | None = None
    train_vision_base: bool = False
    train_text_base: bool = False
    prompt_style: dict | None = None
    coordinate_ndim: int = 2
    coordinate_codec: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projector_type not in ("linear", "mlp2x_gelu"):
            raise ValueError(f"projector_type must be 'linear' or 'mlp2x_gelu', got {self.projector_type!r}")
        if self.position_interpolation not in ("reference", "hf"):
            raise ValueError(f"position_interpolation must be 'reference' or 'hf', got {self.position_interpolation!r}")
        if self.coordinate_ndim not in (2, 3):
            raise ValueError(f"coordinate_ndim must be 2 or 3, got {self.coordinate_ndim}")

    @property
    def patch_size(self) -> int:
        return self.vision_config.patch_size

    @property
    def num_image_tokens(self) -> int:
        """Patch tokens per image (the CLS token is not used): 256 for 224 px with patch 14."""
        return (self.image_size // self.patch_size) ** 2

    def resolved_vision_lora_targets(self) -> tuple[str, ...]:
        if self.vision_lora_targets is not None:
            return tuple(self.vision_lora_targets)
        try:
            return DEFAULT_VISION_LORA_TARGETS[self.vision_config.model_type]
        except KeyError:
            raise ValueError(
                f"no default LoRA targets for vision tower type {self.vision_config.model_type!r}; "
                "set vision_lora_targets"
            ) from None

    def resolved_text_lora_targets(self) -> tuple[str, ...]:
        return tuple(self.text_lora_targets) if self.text_lora_targets is not None else DEFAULT_TEXT_LORA_TARGETS


__all__ = ["LocLLMConfig", "CLIP_MEAN", "CLIP_STD"]
