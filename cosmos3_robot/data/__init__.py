"""Data: sources (HDF5, zarr, LeRobot, rosbag2) -> episodes -> windows -> batches."""

from cosmos3_robot.data.episode import DataError, Episode, resample_indices
from cosmos3_robot.data.windows import WindowDataset, WindowSpec, collate, mixture_weights

__all__ = ["DataError", "Episode", "WindowDataset", "WindowSpec", "collate", "mixture_weights", "resample_indices"]
