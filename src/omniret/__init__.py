"""omniret: universal multimodal retrieval — any query, any candidate, one vector space."""

from omniret.errors import OmniretError
from omniret.index import FlatIndex
from omniret.types import Hit, ImagePart, Item

#: imported on first use, so opening or inspecting an index never pays for importing torch
_LAZY = {"Encoder": "omniret.encoders", "load_encoder": "omniret.encoders", "Retriever": "omniret.retriever"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniret' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "Item",
    "ImagePart",
    "Hit",
    "Encoder",
    "load_encoder",
    "OmniretError",
    "Retriever",
    "FlatIndex",
    "__version__",
]
