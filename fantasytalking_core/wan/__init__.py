"""Wan2.1 DiT with the official module names."""

from .config import WanConfig
from .model import WanModel, init_random_

__all__ = ["WanConfig", "WanModel", "init_random_"]
