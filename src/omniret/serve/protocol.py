"""Request bodies of the HTTP API (pydantic). Text/image content stays ``Any`` here and is parsed by
:mod:`omniret.serve.inputs`, whose errors name the exact field (``input[2].content[1].image_url.url``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's body plus ``input_type`` and ``instruction`` (omniret extensions).

    ``input_type`` picks the encoder side: ``"query"`` (formatted with the instruction) or ``"document"``;
    unset, it is ``"query"`` when an instruction is given and ``"document"`` otherwise.
    """

    model_config = _STRICT
    input: Any
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    input_type: Literal["query", "document"] | None = None
    instruction: str | None = None


class SearchRequest(BaseModel):
    """``POST /v1/search``: ``query`` is a string or ``{"content": [parts]}`` (text and/or images)."""

    model_config = _STRICT
    query: Any
    k: int = Field(10, ge=1)
    instruction: str | None = None
    #: one M-BEIR label ("text", "image", "image,text") or a list of them; null = all documents
    modality: str | list[str] | None = None
    #: reorder with the server's reranker (501 when it has none)
    rerank: bool = False
    #: first-stage hits handed to the reranker (default: max(k, 20))
    rerank_candidates: int | None = Field(None, ge=1)


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: score ``documents`` against ``query`` with the server's reranker.

    A document is a text string, ``{"text": ...}``, ``{"id": ...}`` naming an indexed document (whose stored
    text and images the reranker then sees) or inline content ``{"content": str | [parts]}`` with text and
    ``data:`` image URLs as in ``/v1/embeddings`` (inline images need a scoring reranker, e.g. the MLLM one).
    """

    model_config = _STRICT
    query: Any
    documents: list[Any]
    top_n: int | None = Field(None, ge=1)
    instruction: str | None = None
    model: str | None = None
    return_documents: bool = True
