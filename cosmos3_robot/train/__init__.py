"""Training: the trainer, checkpoint state, and recipes."""

from cosmos3_robot.train.trainer import TrainConfig, Trainer, lr_at

__all__ = ["TrainConfig", "Trainer", "lr_at"]
