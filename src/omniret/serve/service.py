"""What the routes do, as plain async methods over the library (Retriever, Encoder, Reranker, Index).

Kept apart from FastAPI wiring (:mod:`omniret.serve.app`) so each endpoint reads as: parse -> library call ->
response dict.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from omniret.errors import OmniretError
from omniret.index.base import parse_modalities
from omniret.rerank import ScoringReranker, hit_item, reorder
from omniret.retriever import Reranker, Retriever
from omniret.serve.batcher import MicroBatcher
from omniret.serve.config import ServeConfig
from omniret.serve.inputs import RequestError, has_images, parse_inputs, parse_item
from omniret.serve.media import image_paths
from omniret.serve.protocol import EmbeddingsRequest, RerankRequest, SearchRequest
from omniret.types import Hit, Item

#: metadata keys holding the server's absolute file paths: not the client's business (images go via /media)
SERVER_PATHS = ("source", "img_paths")
NO_RERANKER = "no reranker is configured on this server: start it with --reranker MODEL"


def _instructed(items: list[Item], instruction: str | None) -> list[Item]:
    if not instruction:
        return items
    return [it if it.instruction else it.with_instruction(instruction) for it in items]


class Service:
    """The server's state: a retriever, an optional reranker, the micro-batcher and the limits."""

    def __init__(self, retriever: Retriever, config: ServeConfig, batcher: MicroBatcher,
                 reranker: Reranker | None = None) -> None:
        self.retriever = retriever
        self.cfg = config
        self.batcher = batcher
        self.reranker = reranker if reranker is not None else retriever.reranker
        self.model = config.model_name or retriever.encoder.name
        self.started = int(time.time())
        self._rerank_lock = threading.Lock()

    # ------------------------------------------------------------------ small endpoints
    def models(self) -> dict[str, Any]:
        data = [{"id": self.model, "object": "model", "created": self.started, "owned_by": "omniret",
                 "dimensions": self.retriever.encoder.dim}]
        if self.reranker is not None:
            data.append({"id": self._reranker_name(), "object": "model", "created": self.started, "owned_by": "omniret",
                         "kind": "reranker"})
        return {"object": "list", "data": data}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model, "documents": len(self.retriever.index),
                "reranker": self.reranker is not None}

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in (self.model, self.retriever.encoder.name):
            raise RequestError("model", f"{model!r} is not served here; this server serves {self.model!r}", 404)

    # ------------------------------------------------------------------ embeddings
    async def embeddings(self, req: EmbeddingsRequest) -> dict[str, Any]:
        self.check_model(req.model)
        enc = self.retriever.encoder
        if req.dimensions is not None and req.dimensions != enc.dim:
            raise RequestError("dimensions", f"this model embeds in exactly {enc.dim} dimensions, got {req.dimensions}")
        side = req.input_type or ("query" if req.instruction else "document")
        if side == "document" and req.instruction:
            raise RequestError("instruction", "instructions format queries; set input_type to 'query' or drop it")
        items = await _parse(parse_inputs, req.input, "input", self.cfg)
        items = _instructed(items, req.instruction)
        vecs = await self.batcher.encode(items, is_query=side == "query")
        tokens = sum(enc.item_length(it) for it in items)
        return {
            "object": "list",
            "model": self.model,
            "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, req.encoding_format)}
                     for i, v in enumerate(vecs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # ------------------------------------------------------------------ search and rerank
    async def search(self, req: SearchRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        if req.k > self.cfg.max_k:
            raise RequestError("k", f"must be <= {self.cfg.max_k}, got {req.k}")
        if req.rerank and self.reranker is None:
            raise RequestError("rerank", NO_RERANKER, 501)
        try:
            modality = parse_modalities(req.modality)
        except OmniretError as e:
            raise RequestError("modality", str(e)) from e
        query = await _parse(parse_item, req.query, "query", self.cfg)
        query = _instructed([query], req.instruction)[0]
        vec = await self.batcher.encode([query], is_query=True)
        depth = max(req.k, req.rerank_candidates or 20) if req.rerank else req.k
        hits = (await run_in_threadpool(self.retriever.search_vectors, vec, depth, modality))[0]
        if req.rerank:
            hits = (await run_in_threadpool(self._rerank_hits, query, hits))[: req.k]
        return {"object": "list", "model": self.model, "query_modality": query.modality,
                "data": [self._hit(r, h) for r, h in enumerate(hits, 1)],
                "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    def _hit(self, rank: int, h: Hit) -> dict[str, Any]:
        rec = self.retriever.index.get(h.id)
        n_images = len(image_paths(rec)) if rec is not None else 0
        url = f"/media/{quote(h.id, safe='')}"
        out = {"rank": rank, "id": h.id, "score": float(h.score), "modality": h.modality, "text": h.txt,
                "images": [url if i == 0 else f"{url}?part={i}" for i in range(n_images)],
                "metadata": {k: v for k, v in h.metadata.items() if k not in SERVER_PATHS}}
        if getattr(h, "rerank_score", None) is not None:
            out["rerank_score"] = float(h.rerank_score)
        return out

    async def rerank(self, req: RerankRequest) -> dict[str, Any]:
        self.check_model_reranker(req.model)
        if not req.documents:
            raise RequestError("documents", "must not be empty")
        if len(req.documents) > self.cfg.max_items:
            raise RequestError("documents", f"{len(req.documents)} documents exceed the limit of "
                               f"{self.cfg.max_items} per request", 413)
        query = await _parse(parse_item, req.query, "query", self.cfg)
        query = _instructed([query], req.instruction)[0]
        docs = await _parse(self._rerank_docs, req.documents, "documents", self.cfg)
        hits = [h for h, _ in docs]
        position = {h.id: i for i, h in enumerate(hits)}
        if len(position) != len(hits):
            raise RequestError("documents", "names the same indexed document twice")
        ranked = await run_in_threadpool(self._rerank_items, query, docs)
        top = ranked[: req.top_n] if req.top_n else ranked
        results = []
        for h in top:
            row: dict[str, Any] = {"index": position[h.id], "relevance_score": _relevance(h)}
            if req.return_documents:
                row["document"] = {"id": None if h.id.startswith("#") else h.id, "text": h.txt}
            results.append(row)
        return {"object": "list", "model": self._reranker_name(), "results": results}

    def _rerank_items(self, query: Item, docs: list[tuple[Hit, Item | None]]) -> list[Hit]:
        """Rerank on a worker thread. A scoring reranker sees each document as an Item, so inline images
        need no file; any other :class:`Reranker` gets Hits and so only text or indexed documents."""
        hits = [h for h, _ in docs]
        with self._rerank_lock:  # one model call at a time: tokenizers and caches are not made for threads
            if isinstance(self.reranker, ScoringReranker):
                items = [it if it is not None else hit_item(h) for h, it in docs]
                return reorder(hits, np.asarray(self.reranker.score(query, items), dtype=np.float64),
                               self.reranker.weight)
            if any(it is not None and it.images for _, it in docs):
                raise RequestError("documents", f"the reranker {self._reranker_name()!r} takes only text or "
                                   "indexed documents ({\"id\": ...}), not inline images")
            return self.reranker.rerank(query, hits)

    def _rerank_hits(self, query: Item, hits: list[Hit]) -> list[Hit]:
        with self._rerank_lock:
            return self.reranker.rerank(query, hits)

    def check_model_reranker(self, model: str | None) -> None:
        if self.reranker is None:
            raise HTTPException(501, NO_RERANKER)
        if model is not None and model != self._reranker_name():
            raise RequestError("model", f"{model!r} is not served here; the reranker is {self._reranker_name()!r}",
                               404)

    def _reranker_name(self) -> str:
        return str(getattr(self.reranker, "name", type(self.reranker).__name__))

    def _rerank_docs(self, docs: list[Any], field: str, cfg: ServeConfig) -> list[tuple[Hit, Item | None]]:
        return [self._rerank_doc(d, f"{field}[{i}]", i) for i, d in enumerate(docs)]

    def _rerank_doc(self, doc: Any, field: str, i: int) -> tuple[Hit, Item | None]:
        """A document as ``(first-stage Hit, inline Item or None)``: a text (``"..."`` / ``{"text"}``), an
        indexed document (``{"id"}``, no inline item: the reranker reads its stored text and images) or inline
        content (``{"content": ...}``, parsed as an embeddings input, images as data URLs)."""
        if isinstance(doc, str) or (isinstance(doc, dict) and set(doc) == {"text"}):
            text = doc if isinstance(doc, str) else doc["text"]
            if not isinstance(text, str) or not text.strip():
                raise RequestError(field, "must be non-empty text")
            return Hit(id=f"#{i}", score=0.0, modality="text", txt=text), Item(text)
        if isinstance(doc, dict) and set(doc) == {"id"}:
            rec = self.retriever.index.get(str(doc["id"]))
            if rec is None:
                raise RequestError(f"{field}.id", f"no indexed document {doc['id']!r}")
            return rec.hit(0.0), None
        if isinstance(doc, dict) and "content" in doc:
            item = parse_item(doc, field, self.cfg)
            return Hit(id=f"#{i}", score=0.0, modality=item.modality, txt=item.text or None), item
        raise RequestError(field, "must be a string, {\"text\": ...}, {\"id\": INDEXED_ID} or "
                           "{\"content\": [parts]}")


def _relevance(h: Hit) -> float:
    """The reranker's score: ``rerank_score`` where the reranker sets one, else the score it rewrote."""
    rs = getattr(h, "rerank_score", None)
    return float(h.score if rs is None else rs)


async def _parse(fn: Callable[[Any, str, ServeConfig], Any], value: Any, field: str, cfg: ServeConfig) -> Any:
    """Parse request content; image decoding goes to a worker thread, plain text stays on the event loop
    (a thread hop costs more than parsing a few strings)."""
    if has_images(value):
        return await run_in_threadpool(fn, value, field, cfg)
    return fn(value, field, cfg)


def _encode_vector(v: np.ndarray, fmt: str) -> np.ndarray | str:
    """OpenAI's formats: a float list (a float64 array the JSON renderer writes as a list: float64 so that the
    float32 values read back exactly, as ``tolist()`` gave them), or base64 of little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
    return np.asarray(v, dtype=np.float32).astype(np.float64)
