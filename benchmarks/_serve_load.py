"""Shared by the server benchmarks: a real `omniret serve` subprocess on loopback, and asyncio client pools.

Clients and server run in separate processes so the client's own Python work does not share the server's GIL.
Two clients: httpx (what applications use; ~1-2.5 ms of client CPU per request) and a lean raw HTTP/1.1
keep-alive client (asyncio streams on uvloop, requests serialised before the clock starts; ~0.1-0.2 ms per
request), so that on a small machine the client does not take the CPU the server is being measured on.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample-corpus"


def build_index(dst: Path) -> Path:
    """Index the sample corpus's texts and photos (24 documents) with the default encoder."""
    from omniret import Retriever

    corpus = dst / "corpus"
    for sub in ("texts", "photos"):
        shutil.copytree(SAMPLE / sub, corpus / sub)
    Retriever.create(dst / "index", "default").index_corpus(corpus)
    return dst / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(index: Path, *args: str, threads: int = 1):
    """``omniret serve --index INDEX ARGS`` on a free loopback port; yields (URL, pid); SIGTERM at the end."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "omniret", "serve", "--index", str(index), "--port", str(port),
           "--threads", str(threads), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
        time.sleep(0.2)
    try:
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mean_batch(url: str) -> float:
    """Mean items per encoder forward group so far, from the server's /metrics."""
    vals = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(("omniret_batch_items_sum ", "omniret_batch_items_count ")):
            name, v = line.split()
            vals[name] = float(v)
    return vals.get("omniret_batch_items_sum", 0.0) / max(vals.get("omniret_batch_items_count", 0.0), 1.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    #: server CPU seconds spent on the run (independent of what else the machine runs)
    server_cpu: float = float("nan")
    #: this (client) process's CPU seconds: when it nears the wall time, the client limits the throughput
    client_cpu: float = float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def line(self, name: str) -> str:
        return (f"{name:<34} {self.requests:>6} req {self.seconds:7.2f} s {self.throughput:8.1f} req/s  "
                f"p50 {self.pct(50):7.1f} ms  p90 {self.pct(90):7.1f} ms  p99 {self.pct(99):7.1f} ms  "
                f"server CPU {1000 * self.server_cpu / self.requests:5.2f} ms/req  "
                f"client CPU {self.client_cpu / self.seconds:4.2f} cores  errors {sum(self.errors.values())}" + (f" {self.errors}" if self.errors else ""))


def query_texts(n: int, words: tuple[int, int] = (2, 6), seed: int = 0) -> list[str]:
    """``n`` queries of ``words`` (min, max) words drawn from the sample corpus vocabulary."""
    vocab = " ".join(p.read_text() for p in sorted((SAMPLE / "texts").glob("*.txt"))).split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(*words))) for _ in range(n)]


async def _client(http: httpx.AsyncClient, url: str, jobs: asyncio.Queue, res: LoadResult) -> None:
    while True:
        try:
            path, body = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        t0 = time.perf_counter()
        try:
            r = await http.post(url + path, json=body)
            ok = r.status_code == 200
            key = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            ok, key = False, type(e).__name__
        res.latencies.append(time.perf_counter() - t0)
        if not ok:
            res.errors[key] = res.errors.get(key, 0) + 1


async def _run(url: str, requests: list[tuple[str, dict]], clients: int) -> LoadResult:
    jobs: asyncio.Queue = asyncio.Queue()
    for job in requests:
        jobs.put_nowait(job)
    res = LoadResult(len(requests), 0.0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(http, url, jobs, res) for _ in range(clients)))
        res.seconds = time.perf_counter() - t0
    return res


class _RawHTTPError(Exception):
    pass


async def _raw_client(host: str, port: int, jobs: asyncio.Queue, res: LoadResult) -> None:
    """One keep-alive HTTP/1.1 connection sending pre-serialised requests; reconnects when the server closes."""
    reader = writer = None
    while True:
        try:
            raw = jobs.get_nowait()
        except asyncio.QueueEmpty:
            break
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(raw)
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            m = re.search(rb"\r\ncontent-length: *(\d+)", head)
            if m is None:
                raise _RawHTTPError("response without content-length")
            await reader.readexactly(int(m[1]))
            status = int(head[9:12])
            ok, key = status == 200, f"HTTP {status}"
            if b"\r\nconnection: close" in head:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _RawHTTPError) as e:
            ok, key = False, type(e).__name__
            if writer is not None:
                writer.close()
            writer = None
        res.latencies.append(time.perf_counter() - t0)
        if not ok:
            res.errors[key] = res.errors.get(key, 0) + 1
    if writer is not None:
        writer.close()


def _serialise(url: str, path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    host = url.split("://", 1)[1]
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode() + payload


async def _run_raw(url: str, requests: list[tuple[str, dict]], clients: int) -> LoadResult:
    jobs: asyncio.Queue = asyncio.Queue()
    for path, body in requests:
        jobs.put_nowait(_serialise(url, path, body))
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    res = LoadResult(len(requests), 0.0)
    t0 = time.perf_counter()
    await asyncio.gather(*(_raw_client(host, int(port), jobs, res) for _ in range(clients)))
    res.seconds = time.perf_counter() - t0
    return res


def _asyncio_run(coro):  # noqa: ANN001, ANN202 - uvloop when installed (the serve extra has it): a leaner loop
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_load(url: str, requests: list[tuple[str, dict]], clients: int, pid: int | None = None,
             client: str = "httpx") -> LoadResult:
    """Send ``requests`` from ``clients`` concurrent connections (each sends its next when one returns) with
    the ``client`` "httpx" or "raw"; with the server's ``pid``, also measure the server CPU time the run cost."""
    before = cpu_seconds(pid) if pid else 0.0
    client0 = time.process_time()
    res = _asyncio_run(_run_raw(url, requests, clients)) if client == "raw" else asyncio.run(_run(url, requests, clients))
    res.client_cpu = time.process_time() - client0
    if pid:
        res.server_cpu = cpu_seconds(pid) - before
    return res


def temp_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="omniret-bench-serve-"))
    return d
