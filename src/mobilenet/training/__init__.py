"""Training and fine-tuning."""

from mobilenet.training.config import TrainConfig, available_recipes, make_train_config
from mobilenet.training.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer", "available_recipes", "make_train_config"]
