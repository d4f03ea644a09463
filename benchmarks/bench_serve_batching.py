#!/usr/bin/env python
"""Micro-batching vs one request per forward pass: /v1/embeddings throughput at 32 concurrent clients.

Two real `omniret serve` processes on loopback, one after the other, same index, same 1 torch thread:
``--max-batch 32 --max-wait-ms 5`` (micro-batching) and ``--max-batch 1 --max-wait-ms 0`` (baseline: every
request its own forward pass). 32 clients each send their next single-query request as soon as the last one
returns. Prints requests/s, p50/p99 latency, the server's CPU time per request (which, unlike wall-clock
throughput, does not depend on what else the machine is running) and both ratios.

    python benchmarks/bench_serve_batching.py --requests 2000 --clients 32 --words 2-6 [--runtimes onnx,torch]

Both CPU runtimes of the default encoder, one after the other: ONNX Runtime (what a user gets by default)
and PyTorch. The client is a lean raw HTTP/1.1 one by default (``--client httpx`` for the library).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from _serve_load import build_index, mean_batch, query_texts, run_load, serve, temp_dir


def model_ceiling(texts: list[str], batch: int, threads: int, packed: bool = True,
                  runtime: str = "torch") -> tuple[float, float]:
    """CPU ms per query of the bare encoder, one query per call vs ``batch`` per call: how much any server's
    micro-batching can gain at most on this machine. ``packed=False``: HF's padded BERT forward instead of
    omniret's padding-free one (:mod:`omniret.encoders.packed`)."""
    import torch

    from omniret import load_encoder

    torch.set_num_threads(threads)
    enc = load_encoder("default")
    if runtime == "torch" and hasattr(enc, "text"):  # the bundled MiniLM text tower on PyTorch
        enc.text.packed = packed
    enc.encode_queries(texts[:batch], batch_size=batch)  # warm-up
    t0 = time.process_time()
    for t in texts:
        enc.encode_queries([t])
    one = time.process_time() - t0
    t0 = time.process_time()
    for s in range(0, len(texts), batch):
        enc.encode_queries(texts[s : s + batch], batch_size=batch)
    many = time.process_time() - t0
    return 1000 * one / len(texts), 1000 * many / len(texts)


def run_runtime(args: argparse.Namespace, index, reqs: list[tuple[str, dict]], runtime: str) -> dict:
    """Baseline and micro-batched servers on ``runtime``; returns the rows for the summary table."""
    os.environ["OMNIRET_RUNTIME"] = runtime  # inherited by the server processes
    warm = reqs[: 2 * args.clients]
    out = {}
    for name, opts in [
        ("baseline", ["--max-batch", "1", "--max-wait-ms", "0"]),
        ("micro-batched", ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]),
    ]:
        with serve(index, *opts, threads=args.threads) as (url, pid):
            run_load(url, warm, args.clients, client=args.client)
            res = run_load(url, reqs, args.clients, pid, client=args.client)
            out[name] = (res, mean_batch(url))
        print(f"[{runtime}] " + res.line(name) + f"  mean {out[name][1]:.1f} items/forward", flush=True)
    texts = [b["input"] for _, b in reqs[:256]]
    one, many = model_ceiling(texts, args.max_batch, args.threads, True, runtime)
    out["ceiling"] = (one, many)
    print(f"[{runtime}] bare encoder, same queries: {one:.2f} CPU ms/query one per call, {many:.2f} batched by "
          f"{args.max_batch}: ceiling {one / many:.2f}x", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--words", default="2-6", help="query length range in words (search queries are short)")
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads of the server")
    ap.add_argument("--runtimes", default="onnx,torch",
                    help="the default encoder's CPU runtimes to compare (OMNIRET_RUNTIME; onnx is the default)")
    ap.add_argument("--client", default="raw", choices=("raw", "httpx"),
                    help="raw: a lean HTTP/1.1 keep-alive client (little client CPU); httpx: the usual library")
    args = ap.parse_args()
    tmp = temp_dir()
    try:
        words = tuple(int(w) for w in args.words.split("-"))
        index = build_index(tmp)
        reqs = [("/v1/embeddings", {"input": t, "input_type": "query"}) for t in query_texts(args.requests, words)]
        rows = {rt: run_runtime(args, index, reqs, rt) for rt in args.runtimes.split(",")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.requests} single-text ({args.words} words) /v1/embeddings requests, {args.clients} concurrent "
          f"clients ({args.client}), loopback; load average {os.getloadavg()[0]:.2f}")
    print("| runtime | server | req/s | p50 ms | p99 ms | server CPU ms/req | items/forward |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for rt, r in rows.items():
        for name in ("baseline", "micro-batched"):
            res, items = r[name]
            print(f"| {rt} | {name} | {res.throughput:.1f} | {res.pct(50):.0f} | {res.pct(99):.0f} | "
                  f"{1000 * res.server_cpu / res.requests:.2f} | {items:.1f} |")
    print("\n| runtime | throughput ratio | server CPU/request ratio | bare-encoder ceiling |")
    print("|---|---:|---:|---:|")
    for rt, r in rows.items():
        (base, _), (ours, _), (one, many) = r["baseline"], r["micro-batched"], r["ceiling"]
        print(f"| {rt} | {ours.throughput / base.throughput:.2f}x | {base.server_cpu / ours.server_cpu:.2f}x | "
              f"{one / many:.2f}x ({one:.2f} vs {many:.2f} ms/query) |")


if __name__ == "__main__":
    main()
