"""dal: unsupervised brain lesion detection by Disentangled Anatomy Learning."""
from dal._version import __version__

__all__ = ["__version__"]
