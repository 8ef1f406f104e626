"""Training: the YAML config, the model-type table (builder, collator, loss), the data order, atomic
checkpoints, and the one accelerate training loop."""

from .collator import TrainingCollator
from .config import TrainConfig, load_config
from .trainer import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingCollator", "TrainingDiverged", "load_config", "train"]
