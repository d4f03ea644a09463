#!/usr/bin/env python
"""Load test of `omniret serve` on loopback: 200 concurrent clients, a fixed number of requests, 0 errors.

A real server process (default settings: micro-batching <= 32 items, 5 ms) over a 24-document index; the
request mix is 60% text /v1/search (k=10), 30% /v1/embeddings (one text) and 10% /v1/search with an image
(an emoji PNG as a data URL). Each client sends its next request when the last returns. Prints throughput,
latency percentiles per kind and overall, and exits 1 if any request failed. The server is stopped with
SIGTERM at the end (graceful shutdown).

    python benchmarks/bench_serve_load.py --clients 200 --requests 1000
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import sys

from _serve_load import SAMPLE, LoadResult, build_index, query_texts, run_load, serve, temp_dir


def make_requests(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    emoji = sorted((SAMPLE / "emoji").glob("*.png"))
    texts = query_texts(n, seed=seed)
    out = []
    for i in range(n):
        u = rng.random()
        if u < 0.6:
            out.append(("/v1/search", {"query": texts[i], "k": 10}))
        elif u < 0.9:
            out.append(("/v1/embeddings", {"input": texts[i], "input_type": "query"}))
        else:
            url = "data:image/png;base64," + base64.b64encode(rng.choice(emoji).read_bytes()).decode()
            out.append(("/v1/search", {"query": {"content": [{"type": "image_url", "image_url": {"url": url}}]},
                                       "k": 10}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--serve-args", default="", help="extra `omniret serve` options, e.g. '--keep-alive-s 5'")
    args = ap.parse_args()
    tmp = temp_dir()
    try:
        index = build_index(tmp)
        reqs = make_requests(args.requests)
        with serve(index, *args.serve_args.split(), threads=args.threads) as (url, pid):
            run_load(url, reqs[:50], 50)  # warm-up
            res: LoadResult = run_load(url, reqs, args.clients, pid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.requests} requests (60% text search, 30% embeddings, 10% image search), "
          f"{args.clients} concurrent clients, loopback, server stopped by SIGTERM afterwards")
    print(res.line("all"))
    print(f"p50 {res.pct(50):.0f} ms, p90 {res.pct(90):.0f} ms, p99 {res.pct(99):.0f} ms, "
          f"max {res.pct(100):.0f} ms; {res.throughput:.1f} req/s; errors: {sum(res.errors.values())}")
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
