"""CLIP-baseline configuration: the CLIP towers, crop geometry, heatmap head, keypoint text and LoRA placement
(the model: :mod:`locllm.models.modeling_clip_baseline`)."""

from __future__ import annotations

from transformers import CLIPConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..codecs import HeatmapCodec
from .configuration_locllm import CLIP_MEAN, CLIP_STD

MODEL_TYPE = "locllm_clip_baseline"


class CLIPBaselineConfig(PretrainedConfig):
    r"""Configuration of [`CLIPBaselineForKeypointHeatmaps`].

    Args:
        clip_config: the CLIP model (both towers and the projection size).
        clip_model_name_or_path: a CLIP folder to load the towers from (e.g. ``openai/clip-vit-large-patch14``
            downloaded beforehand); ``None``: the weights live in the checkpoint (tiny models).
        image_size: side of the square crop (224 in the paper); a tower trained at another size has its
            position embeddings interpolated.
        image_mean / image_std: pixel normalization (CLIP's).
        text_template: what the text tower reads for a keypoint, with ``{name}`` and ``{description}``
            (the paper: its description).
        head_channels: channels of the head's deconvolutions.
        num_deconv_layers: each doubles the resolution: the heatmap side is the patch grid's times
            ``2 ** num_deconv_layers`` (ViT-L/14 at 224 px: 16 -> 64).
        heatmap_sigma: standard deviation of the target Gaussians, in heatmap cells.
        lora_vision / lora_text: LoRA on the q/v projections of the image / text tower; ``lora_r``,
            ``lora_alpha``, ``lora_dropout``.
        train_vision_base / train_text_base: train all weights of the tower (and its projection)
            instead of only LoRA (towers without pretraining, such as tiny ones).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"clip_config": SubConfigSpec(config_class=CLIPConfig)}

    clip_config: dict | PretrainedConfig | None = None
    clip_model_name_or_path: str | None = None
    image_size: int = 224
    image_mean: tuple[float, ...] | list[float] = CLIP_MEAN
    image_std: tuple[float, ...] | list[float] = CLIP_STD
    text_template: str = "{description}"
    head_channels: int = 256
    num_deconv_layers: int = 2
    heatmap_sigma: float = 2.0
    lora_vision: bool = True
    lora_text: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_vision_base: bool = False
    train_text_base: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_geometry()
        if self.num_deconv_layers < 0 or self.head_channels < 1:
            raise ValueError("num_deconv_layers must be >= 0 and head_channels >= 1")
        if "{name}" not in self.text_template and "{description}" not in self.text_template:
            raise ValueError(f"text_template must contain {{name}} or {{description}}, got {self.text_template!r}")

    def check_geometry(self) -> None:
        """The crop must be a whole number of patches (checked again once a CLIP folder gives the towers)."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the patch size {self.patch_size}")

    @property
    def patch_size(self) -> int:
        return self.clip_config.vision_config.patch_size

    @property
    def grid_size(self) -> int:
        """Side of the patch grid: the feature map is (P, grid_size, grid_size)."""
        return self.image_size // self.patch_size

    @property
    def heatmap_size(self) -> int:
        return self.grid_size * 2**self.num_deconv_layers

    @property
    def max_text_length(self) -> int:
        return self.clip_config.text_config.max_position_embeddings

    def heatmap_codec(self) -> HeatmapCodec:
        return HeatmapCodec(self.image_size, self.heatmap_size, self.heatmap_sigma)


SIZES = {
    # name: (vision hidden, layers, heads, patch, image size, text hidden, layers, heads, text positions,
    #        projection, head channels)
    "tiny": (32, 2, 2, 8, 64, 32, 2, 2, 256, 32, 32),  # character-level descriptions need ~130 positions
    "paper": (1024, 24, 16, 14, 224, 768, 12, 12, 77, 768, 256),  # CLIP ViT-L/14
}


def clip_baseline_config(size: str = "tiny", tokenizer=None, **overrides) -> CLIPBaselineConfig:
    """A CLIPBaselineConfig with CLIP towers of the named size, randomly initialized when built.

    With a ``tokenizer`` the text tower takes its vocabulary and special-token ids; without one, CLIP's.
    """
    try:
        v_dim, v_layers, v_heads, patch, image_size, t_dim, t_layers, t_heads, positions, projection, head = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}") from None
    text = {"hidden_size": t_dim, "intermediate_size": 4 * t_dim, "num_hidden_layers": t_layers,
            "num_attention_heads": t_heads, "max_position_embeddings": positions, "projection_dim": projection}
    if tokenizer is not None:
        text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    clip = CLIPConfig(
        vision_config={"hidden_size": v_dim, "intermediate_size": 4 * v_dim, "num_hidden_layers": v_layers,
                       "num_attention_heads": v_heads, "patch_size": patch, "image_size": image_size,
                       "projection_dim": projection},
        text_config=text,
        projection_dim=projection,
    )
    return CLIPBaselineConfig(clip_config=clip, **{"image_size": image_size, "head_channels": head, **overrides})


__all__ = ["CLIPBaselineConfig", "clip_baseline_config"]
