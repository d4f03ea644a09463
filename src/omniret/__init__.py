"""omniret: universal multimodal retrieval — any query, any candidate, one vector space."""

from omniret.encoders import Encoder, load_encoder
from omniret.errors import OmniretError
from omniret.index import FlatIndex
from omniret.retriever import Retriever
from omniret.types import Hit, ImagePart, Item

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
