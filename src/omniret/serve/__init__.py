"""HTTP face of omniret: OpenAI-compatible embeddings, search, rerank, metrics and a web search page.

Needs the ``serve`` extra (FastAPI + uvicorn). Start it with ``omniret serve --index DIR`` or
:func:`create_app` + any ASGI server. The server is a thin layer over :class:`~omniret.Retriever`.
"""

from omniret.serve.app import create_app
from omniret.serve.config import ServeConfig

__all__ = ["create_app", "ServeConfig"]
