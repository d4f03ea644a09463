"""Shared by the server benchmarks: a real `omniret serve` subprocess on loopback, and an asyncio client pool.

Clients and server run in separate processes so the client's own Python work does not share the server's GIL.
"""

from __future__ import annotations

import asyncio
import os
import random
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


def run_load(url: str, requests: list[tuple[str, dict]], clients: int, pid: int | None = None) -> LoadResult:
    """Send ``requests`` from ``clients`` concurrent connections (each sends its next when one returns);
    with the server's ``pid``, also measure the server CPU time the run cost."""
    before = cpu_seconds(pid) if pid else 0.0
    client0 = time.process_time()
    res = asyncio.run(_run(url, requests, clients))
    res.client_cpu = time.process_time() - client0
    if pid:
        res.server_cpu = cpu_seconds(pid) - before
    return res


def temp_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="omniret-bench-serve-"))
    return d
