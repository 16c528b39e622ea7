"""cosmos3-robot: compact Cosmos-3-style world-action models for real robots."""

__version__ = "0.1.0"
