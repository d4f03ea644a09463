"""MicroBatcher: concurrent requests share forward passes, results go back to the right caller in order, a
failing request does not fail the others, a full queue refuses at once, close() drains the queue."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from omniret.encoders.base import Encoder  # noqa: E402
from omniret.serve.batcher import MicroBatcher, QueueFullError  # noqa: E402
from omniret.types import Item  # noqa: E402


class CharEncoder(Encoder):
    """A deterministic bag-of-characters encoder that records the size of every forward pass; an item whose
    text is ``"boom"`` raises, and ``gate`` (when set) holds every forward until released."""

    name, dim = "chars", 8

    def __init__(self) -> None:
        self.forwards: list[int] = []
        self.gate: threading.Event | None = None

    def prepare(self, items, *, is_query):
        if any(it.text == "boom" for it in items):
            raise ValueError("boom: cannot encode")
        rows = [[float(sum(map(ord, it.text or "")) % (i + 3)) + i + (1.0 if is_query else 0.0)
                 for i in range(self.dim)] for it in items]
        return torch.tensor(rows)

    def forward(self, batch):
        if self.gate is not None:
            self.gate.wait(10)
        self.forwards.append(len(batch))
        return batch


def _run(coros):
    async def main():
        return await asyncio.gather(*coros, return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_share_one_forward_and_get_their_own_rows():
    enc = CharEncoder()
    b = MicroBatcher(enc, max_batch=64, max_wait_ms=200)
    texts = [[f"text {i}", f"more {i}"] for i in range(10)]
    out = _run([b.encode([Item(t) for t in ts], is_query=True) for ts in texts])
    b.close()
    assert enc.forwards == [20]  # 10 requests x 2 items in one pass (checked before the references below)
    for ts, got in zip(texts, out, strict=True):
        np.testing.assert_array_equal(got, enc.encode_queries(ts))


def test_sides_are_encoded_separately_and_max_batch_bounds_a_pass():
    enc = CharEncoder()
    b = MicroBatcher(enc, max_batch=4, max_wait_ms=200)
    out = _run([b.encode([Item("q")], is_query=True), b.encode([Item("d")], is_query=False)]
               + [b.encode([Item(f"x{i}")], is_query=True) for i in range(6)])
    b.close()
    passes = list(enc.forwards)
    np.testing.assert_array_equal(out[0], enc.encode_queries(["q"]))
    np.testing.assert_array_equal(out[1], enc.encode_documents(["d"]))
    assert not np.array_equal(out[0], enc.encode_documents(["q"]))
    assert max(passes) <= 4 and sum(passes) == 8


def test_one_failing_request_does_not_fail_the_others():
    enc = CharEncoder()
    b = MicroBatcher(enc, max_batch=64, max_wait_ms=200)
    out = _run([b.encode([Item("fine")], True), b.encode([Item("boom")], True), b.encode([Item("ok")], True)])
    b.close()
    assert isinstance(out[1], ValueError) and "boom" in str(out[1])
    np.testing.assert_array_equal(out[0], enc.encode_queries(["fine"]))
    np.testing.assert_array_equal(out[2], enc.encode_queries(["ok"]))


def test_full_queue_refuses_and_close_drains():
    enc = CharEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, max_batch=1, max_wait_ms=0, max_queue=2)

    async def main():
        first = asyncio.ensure_future(b.encode([Item("a")], True))
        await asyncio.sleep(0.2)  # the worker has taken "a" and waits at the gate
        queued = [asyncio.ensure_future(b.encode([Item(t)], True)) for t in ("b", "c")]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="server busy"):
            await b.encode([Item("d")], True)
        enc.gate.set()
        return await asyncio.gather(first, *queued)

    out = asyncio.run(main())
    b.close()
    assert [o.shape for o in out] == [(1, 8)] * 3 and enc.forwards == [1, 1, 1]
    assert not b._thread.is_alive()


def test_wait_for_companions_counts_from_queueing():
    """Requests that queued behind a busy encoder for longer than max_wait leave as one group as soon as it is
    free; they do not idle it for another max_wait (that window is counted from when each group's first
    request was queued)."""
    import time

    enc = CharEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, max_batch=64, max_wait_ms=1000)

    async def main():
        first = asyncio.ensure_future(b.encode([Item("a")], True))
        await asyncio.sleep(1.2)  # "a" waited its 1 s alone and is now held in its forward pass
        queued = [asyncio.ensure_future(b.encode([Item(t)], True)) for t in ("b", "c")]
        await asyncio.sleep(1.1)  # longer than max_wait behind the busy encoder
        enc.gate.set()
        t0 = time.monotonic()
        await asyncio.gather(*queued)
        return time.monotonic() - t0, await first

    waited, _ = asyncio.run(main())
    b.close()
    assert enc.forwards == [1, 2]
    assert waited < 0.5  # not another 1 s window


def test_a_cancelled_request_never_reaches_the_encoder_and_the_others_complete():
    """A caller that goes away (client disconnect: its coroutine is cancelled) while queued is skipped; the
    requests around it get their own rows."""
    enc = CharEncoder()
    enc.gate = threading.Event()
    b = MicroBatcher(enc, max_batch=1, max_wait_ms=0)

    async def main():
        held = asyncio.ensure_future(b.encode([Item("held")], True))
        await asyncio.sleep(0.2)  # the worker has taken "held" and waits at the gate
        gone = asyncio.ensure_future(b.encode([Item("gone")], True))
        kept = asyncio.ensure_future(b.encode([Item("kept")], True))
        await asyncio.sleep(0)
        gone.cancel()
        enc.gate.set()
        return await held, await kept, gone.cancelled()

    held, kept, cancelled = asyncio.run(main())
    b.close()
    assert cancelled and enc.forwards == [1, 1]  # "gone" was never encoded
    np.testing.assert_array_equal(held, enc.encode_queries(["held"]))
    np.testing.assert_array_equal(kept, enc.encode_queries(["kept"]))
