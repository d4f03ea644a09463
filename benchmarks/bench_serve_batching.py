#!/usr/bin/env python
"""Micro-batching vs one request per forward pass: /v1/embeddings throughput at 32 concurrent clients.

Two real `omniret serve` processes on loopback, one after the other, same index, same 1 torch thread:
``--max-batch 32 --max-wait-ms 5`` (micro-batching) and ``--max-batch 1 --max-wait-ms 0`` (baseline: every
request its own forward pass). 32 clients each send their next single-query request as soon as the last one
returns. Prints requests/s, p50/p99 latency, the server's CPU time per request (which, unlike wall-clock
throughput, does not depend on what else the machine is running) and both ratios.

    python benchmarks/bench_serve_batching.py --requests 640 --clients 32 --words 2-6 [--runtime torch|onnx|auto]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--words", default="2-6", help="query length range in words (search queries are short)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--runtime", default="torch", choices=("torch", "onnx", "auto"),
                    help="the default encoder's CPU runtime (OMNIRET_RUNTIME) for the servers and the ceiling")
    ap.add_argument("--client", default="raw", choices=("raw", "httpx"),
                    help="raw: a lean HTTP/1.1 keep-alive client (little client CPU); httpx: the usual library")
    args = ap.parse_args()
    os.environ["OMNIRET_RUNTIME"] = args.runtime  # inherited by the server processes
    tmp = temp_dir()
    try:
        words = tuple(int(w) for w in args.words.split("-"))
        index = build_index(tmp)
        reqs = [("/v1/embeddings", {"input": t, "input_type": "query"}) for t in query_texts(args.requests, words)]
        warm = reqs[: args.clients]
        results, batch = {}, {}
        for name, opts in [
            ("baseline (1 request / forward)", ["--max-batch", "1", "--max-wait-ms", "0"]),
            (f"micro-batched (<= {args.max_batch}, {args.max_wait_ms:g} ms)",
             ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]),
        ]:
            with serve(index, *opts, threads=args.threads) as (url, pid):
                run_load(url, warm, args.clients, client=args.client)
                results[name] = run_load(url, reqs, args.clients, pid, client=args.client)
                batch[name] = mean_batch(url)
        print(f"{args.requests} single-text ({args.words} words) /v1/embeddings requests, "
              f"{args.clients} concurrent clients, loopback")
        for name, res in results.items():
            print(res.line(name) + f"  mean {batch[name]:.1f} items/forward")
        base, ours = results.values()
        texts = [b["input"] for _, b in reqs[:256]]
        for packed in (False, True) if args.runtime == "torch" else (True,):
            one, many = model_ceiling(texts, args.max_batch, args.threads, packed, args.runtime)
            what = ("padding-free" if packed else "HF padded") + " BERT" if args.runtime == "torch" else args.runtime
            print(f"bare encoder ({what}), same queries: {one:.2f} CPU ms/query one per call, {many:.2f} batched "
                  f"by {args.max_batch}: ceiling {one / many:.2f}x")
        print(f"throughput ratio (micro-batched / baseline): {ours.throughput / base.throughput:.2f}x; "
              f"server CPU per request ratio (baseline / micro-batched): {base.server_cpu / ours.server_cpu:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
