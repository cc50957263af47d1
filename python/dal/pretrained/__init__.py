"""The pretrained checkpoint shipped with dal, and where to find it.

The shipped checkpoint is ``dal/pretrained/dal-default.safetensors``, package data of this
package (pyproject.toml must list ``*.safetensors`` under ``[tool.setuptools.package-data]`` for
``dal.pretrained``). ``DAL_PRETRAINED`` (a path) overrides it, for a site that keeps its own default.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEFAULT_NAME = "dal-default.safetensors"
ENVIRONMENT_VARIABLE = "DAL_PRETRAINED"


def default_checkpoint() -> Path:
    """The path of the default checkpoint: ``$DAL_PRETRAINED`` if set, else the shipped one.

    Raises:
        CheckpointError: no checkpoint is shipped with this installation (and none is set).
    """
    from dal.engine.checkpoint import CheckpointError

    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override:
        return Path(override)
    path = Path(str(resources.files(__package__).joinpath(DEFAULT_NAME)))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no pretrained checkpoint is shipped with this dal installation; "
                              "give one with --model CKPT (Detector.load(path)), e.g. best.safetensors of a "
                              "`dal train` run")
    return path
