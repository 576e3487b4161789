"""Training and fine-tuning."""

from mobilenet.training.config import TrainConfig, available_recipes, make_train_config
from mobilenet.training.image_classifier import ImageClassifier
from mobilenet.training.trainer import Trainer, TrainResult

__all__ = ["ImageClassifier", "TrainConfig", "TrainResult", "Trainer", "available_recipes", "make_train_config"]
