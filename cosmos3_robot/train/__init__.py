"""Training: settings (``config``), the trainer, checkpoint state and metrics, and recipes."""

from cosmos3_robot.train.config import TrainConfig, lr_at
from cosmos3_robot.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "lr_at"]
