"""Micro-batching: concurrent requests share one encoder forward pass.

Requests enter a bounded queue; one worker thread takes the first, then keeps collecting until ``max_batch``
items are waiting or ``max_wait_ms`` has passed since that first request was queued, and encodes each side (queries,
documents) of what it collected in one ``encode_*`` call. A full queue refuses new work at once (the server
answers 503) instead of letting latency and memory grow without bound. With ``max_batch=1`` every request
gets its own forward pass: the baseline of ``benchmarks/bench_serve_batching.py``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omniret.encoders import Encoder
from omniret.errors import OmniretError
from omniret.types import Item


class QueueFullError(OmniretError):
    """The encoder queue is full: the server is overloaded (HTTP 503)."""


@dataclass
class _Job:
    """One request's items and the event-loop future its caller awaits. The worker hands the result over with
    one ``call_soon_threadsafe`` (a ``concurrent.futures.Future`` + ``asyncio.wrap_future`` costs a lock, a
    condition variable and a second callback per request)."""

    items: list[Item]
    is_query: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    #: when it entered the queue: its wait for companions is counted from here
    queued_at: float = field(default_factory=time.monotonic)

    def resolve(self, value: Any) -> None:
        """Deliver a result (or an exception) to the waiting coroutine, from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, value)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is waiting any more
            pass


def _settle(future: asyncio.Future, value: Any) -> None:
    if future.done():  # the caller was cancelled (client went away)
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


_STOP = object()


class MicroBatcher:
    """Groups concurrent :meth:`encode` calls into shared forward passes on one worker thread."""

    def __init__(
        self,
        encoder: Encoder,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        #: called with (items, requests) after every forward group, for metrics
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._run, name="omniret-batcher", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        """Requests waiting for the encoder."""
        return self._queue.qsize()

    async def encode(self, items: list[Item], is_query: bool) -> np.ndarray:
        """Embeddings ``(len(items), dim)`` float32, L2-normalised, as ``encode_queries/documents`` give them.

        Items must already carry their instruction (queries). Raises :class:`QueueFullError` when full.
        """
        loop = asyncio.get_running_loop()
        job = _Job(list(items), is_query, loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"server busy: {self._queue.maxsize} requests already wait for the encoder") from None
        return await job.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish every queued request, then stop the worker (graceful shutdown)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever joins it within the wait budget; True when a stop was seen."""
        jobs, n = [first], len(first.items)
        # counted from when ``first`` was queued, not from now: under load it already waited through the last
        # forward pass while others queued behind it, so the group leaves at once instead of idling the encoder
        deadline = first.queued_at + self.max_wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            n += len(job.items)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs, stop = self._collect(first)
            for side in (True, False):
                # skip callers already gone; one cancelled after this check is settled as a no-op by _settle
                group = [j for j in jobs if j.is_query is side and not j.future.done()]
                if group:
                    self._encode_group(group, side)

    def _encode_group(self, jobs: list[_Job], is_query: bool) -> None:
        items = [it for j in jobs for it in j.items]
        fn = self.encoder.encode_queries if is_query else self.encoder.encode_documents
        try:
            vecs = fn(items, batch_size=self.max_batch)
        except Exception as e:  # one bad request must not fail the others: retry each alone
            if len(jobs) == 1:
                jobs[0].resolve(e)
                return
            for j in jobs:
                try:
                    j.resolve(fn(j.items, batch_size=self.max_batch))
                except Exception as e1:
                    j.resolve(e1)
            return
        if self._on_batch is not None:
            self._on_batch(len(items), len(jobs))
        start = 0
        for j in jobs:
            j.resolve(vecs[start : start + len(j.items)])
            start += len(j.items)
