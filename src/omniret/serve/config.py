"""Server settings: limits, security switches and micro-batching knobs, one typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    """Everything the HTTP face needs besides the retriever.

    Defaults are the safe ones: no remote image URLs, no CORS, a 20 MB request cap, 10 MB per image and
    25 megapixels per decoded image.
    """

    #: a Bearer token every ``/v1/*``, ``/media`` and ``/metrics`` request must carry (``None``: open)
    api_key: str | None = None
    #: origins allowed by CORS; empty keeps CORS off (browsers then allow same-origin calls only)
    cors_origins: list[str] = field(default_factory=list)
    #: fetch ``http(s)://`` image URLs server-side (off: only ``data:`` URLs are accepted)
    allow_remote_urls: bool = False
    max_request_bytes: int = 20_000_000
    max_image_bytes: int = 10_000_000
    max_image_pixels: int = 25_000_000
    #: items in one /v1/embeddings request or documents in one /v1/rerank request
    max_items: int = 256
    max_k: int = 1000
    #: micro-batching: at most this many items per forward pass ...
    max_batch: int = 32
    #: ... waiting at most this long after the first queued request for others to join it
    max_wait_ms: float = 5.0
    #: requests waiting for the encoder beyond this are refused with 503 (backpressure, bounded memory)
    max_queue: int = 1024
    #: longest side of a thumbnail served by /media
    thumb_size: int = 256
    #: the name /v1/models reports (defaults to the encoder's name)
    model_name: str | None = None
    #: seconds an idle keep-alive connection stays open. Above every common client's idle expiry (httpx 5 s,
    #: aiohttp 15 s, Go's net/http 90 s) so the *client* always closes first: with equal timeouts (uvicorn's
    #: default is 5 s, httpx's too) the server can close a connection just as the client reuses it, and that
    #: request fails with a connection reset. Shutdown closes idle connections at once, whatever this is.
    keep_alive_s: int = 120

    def __post_init__(self) -> None:
        from omniret.errors import ConfigError

        for name in ("max_request_bytes", "max_image_bytes", "max_image_pixels", "max_items", "max_k",
                     "max_batch", "max_queue", "thumb_size", "keep_alive_s"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be blank")
