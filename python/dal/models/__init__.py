"""DAL and its baselines. Every model has ``forward(batch) -> dict of losses`` (the training
step, "loss" the total) and ``pseudo_healthy(x) -> dict`` with at least "phi" (N, 1, H, W), or, for a model of the whole
volume (the z-score), ``expected_volume(volume) -> (mean, std)``."""
from __future__ import annotations

import torch.nn as nn

from dal.errors import ConfigError
from dal.models.autoencoders import AutoEncoder, DenoisingAutoEncoder, IntensityBaseline, ZScoreBaseline
from dal.models.config import MODEL_KINDS, LossConfig, ModelConfig
from dal.models.dal import DAL

__all__ = ["AutoEncoder", "DAL", "DenoisingAutoEncoder", "IntensityBaseline", "LossConfig", "MODEL_KINDS", "ModelConfig", "ZScoreBaseline", "build_model"]


def build_model(config: ModelConfig, losses: LossConfig | None = None,
                volume_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The model that ``config.kind`` names; ``volume_shape`` is model space's (X, Y, Z), which
    sizes the z-score's volumes (the preprocessing's ``shape``; the other models ignore it)."""
    if config.kind == "dal":
        return DAL(config, losses)
    if config.kind == "ae":
        return AutoEncoder(config)
    if config.kind == "dae":
        return DenoisingAutoEncoder(config)
    if config.kind == "intensity":
        return IntensityBaseline(config)
    if config.kind == "zscore":
        return ZScoreBaseline(config, volume_shape)
    raise ConfigError(f"model.kind: expected one of {MODEL_KINDS}, got {config.kind!r}")
