"""The compact Cosmos-3-style Mixture-of-Transformers world-action model."""

from cosmos3_robot.model.checkpoint import load_model, save_model
from cosmos3_robot.model.config import PRESETS, Cosmos3Config, FlowConfig, preset
from cosmos3_robot.model.cosmos3 import Cosmos3, WorldBatch
from cosmos3_robot.model.modes import MODES, Mode, get_mode

__all__ = ["Cosmos3", "Cosmos3Config", "FlowConfig", "MODES", "Mode", "PRESETS", "WorldBatch",
           "get_mode", "load_model", "preset", "save_model"]
