"""dal: unsupervised brain lesion detection by Disentangled Anatomy Learning.

The public API (what the ``dal`` command stands on):

- :class:`Detector`: load a checkpoint, find lesions in scans and folders (``dal infer``);
- :func:`train`, :func:`evaluate`, :func:`synthesize` (``dal train``, ``dal evaluate``, ``dal synth``);
- :class:`DalError` and its subclasses, the errors about inputs, settings and outputs;
- :func:`keep_freed_memory`: glibc keeps freed large blocks for the next tensors (what the
  ``dal`` command does for its process; a program of yours may choose to);
- :func:`dal.ops.build_info`: how the compiled ops were built.
"""
from dal._version import __version__
from dal.errors import (ArgumentError, CheckpointError, ConfigError, DalError, DataError, DeviceError, FolderInUse,
                        OutputError, TrainingError)

__all__ = ["ArgumentError", "CheckpointError", "ConfigError", "DalError", "DataError", "Detector", "DeviceError",
           "FolderInUse", "OutputError", "TrainingError", "__version__", "evaluate", "keep_freed_memory", "synthesize", "train"]

# Lazy: `import dal` stays light (no torch, nibabel or nilearn until they are used).
_HOMES = {"Detector": "dal.engine.infer", "train": "dal.api", "evaluate": "dal.api", "synthesize": "dal.api",
          "keep_freed_memory": "dal.engine.memory"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'dal' has no attribute {name!r}")
