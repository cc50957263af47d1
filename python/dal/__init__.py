"""dal: unsupervised brain lesion detection by Disentangled Anatomy Learning."""
from dal._version import __version__
from dal.errors import DalError

__all__ = ["DalError", "Detector", "__version__"]


def __getattr__(name: str):
    # Lazy: `import dal` stays light (no torch, nibabel or nilearn until the detector is used).
    if name == "Detector":
        from dal.engine.infer import Detector

        return Detector
    raise AttributeError(f"module 'dal' has no attribute {name!r}")
