"""dal: unsupervised brain lesion detection by Disentangled Anatomy Learning."""
from dal._version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy: `import dal` stays light (no torch, nibabel or nilearn until the detector is used).
    if name == "Detector":
        from dal.engine.infer import Detector

        return Detector
    raise AttributeError(f"module 'dal' has no attribute {name!r}")
