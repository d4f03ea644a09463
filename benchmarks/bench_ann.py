"""Quantised ANN at scale: recall@10 vs QPS vs memory of the local index's ANN kinds, side by side with
faiss's own index of the same kind (the very structure, searched raw) and with exact search.

    python benchmarks/bench_ann.py [--n 1000000] [--dim 384] [--queries 1000] [--threads 1] [--out ann.json]

Data: synthetic, embedding-like vectors — a Gaussian mixture (``--centres`` clusters, ``--noise``) in a
``--latent``-dimensional space, lifted linearly to ``--dim`` with a little isotropic noise, L2-normalised
(text embeddings have a low intrinsic dimension; a million real documents cannot be encoded on a shared CPU);
queries are drawn from the same distribution. Ground truth is exact inner-product top-10 (faiss ``IndexFlatIP``).

Rows: exact (omniret flat vs ``faiss.IndexFlatIP``), then per ANN kind one row per search setting for
omniret (``FlatIndex.search_rows``: shortlist + exact rerank for quantised kinds) and for the raw faiss index.
Memory is the ANN structure's serialised size (codes + graph / lists); omniret's local backend also keeps
the float32 vectors (``n * dim * 4`` bytes) as its source of truth and for reranking.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _pin_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def clustered(rng, n: int, centres, noise: float, lift, lift_noise: float):
    """``n`` unit vectors: a Gaussian mixture in the latent space of ``centres`` ``(C, L)``, lifted to
    ``(n, D)`` by ``lift`` ``(L, D)`` plus isotropic noise ``lift_noise`` (embedding-like: low intrinsic
    dimension L inside D)."""
    import numpy as np

    out = np.empty((n, lift.shape[1]), np.float32)
    for s in range(0, n, 100_000):  # in blocks: bounded temporary memory at 1M x 384
        m = min(100_000, n - s)
        z = centres[rng.integers(0, len(centres), m)]
        z += noise * rng.standard_normal(z.shape, dtype=np.float32)
        out[s : s + m] = z @ lift + lift_noise * rng.standard_normal((m, lift.shape[1]), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def recall(rows, truth) -> float:
    import numpy as np

    k = truth.shape[1]
    return float(np.mean([len(set(r[:k]) & set(t)) / k for r, t in zip(rows.tolist(), truth.tolist(), strict=True)]))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact-queries", type=int, default=200, help="queries timed for exact QPS")
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the data")
    ap.add_argument("--noise", type=float, default=0.5, help="latent per-dimension noise around a centre (centres: N(0, 1))")
    ap.add_argument("--lift-noise", type=float, default=0.02, help="per-dimension noise after lifting to --dim")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--rerank", type=int, default=4, help="HNSW-int8 shortlist factor")
    ap.add_argument("--ivf-rerank", type=int, default=16, help="IVF-PQ shortlist factor")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    _pin_threads(args.threads)

    import faiss
    import numpy as np

    from omniret.index import FlatIndex, Record
    from omniret.index.ann import ANNParams

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.centres, args.latent), dtype=np.float32)
    lift = rng.standard_normal((args.latent, args.dim), dtype=np.float32) / np.sqrt(args.latent)
    docs = clustered(rng, args.n, centres, args.noise, lift, args.lift_noise)
    qs = clustered(rng, args.queries, centres, args.noise, lift, args.lift_noise)
    rows_out: list[dict] = []

    def row(system: str, kind: str, setting: str, rec: float, qps: float, mem: int, build: float | None) -> None:
        r = {"system": system, "kind": kind, "setting": setting, "recall@10": round(rec, 4), "qps": round(qps, 1),
             "memory_mb": round(mem / 2**20, 1), "build_s": None if build is None else round(build, 1)}
        rows_out.append(r)
        print(json.dumps(r), flush=True)

    ix = FlatIndex(args.dim, encoder_name="bench", recipe_hash="-")
    ix.add(docs, [Record(id=str(i), modality="text") for i in range(args.n)])
    del docs
    vec = ix.vectors
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vec)
    truth, t_truth = timed(lambda: flat.search(qs, 10)[1])
    top1 = float(np.median(flat.search(qs[:100], 1)[0]))
    print(f"median top-1 cosine of the queries: {top1:.3f}", flush=True)
    nq = args.exact_queries
    (_, r_raw), dt = timed(lambda: flat.search(qs[:nq], 10))
    row("faiss IndexFlatIP", "exact", "-", recall(r_raw, truth[:nq]), nq / dt, vec.nbytes, None)
    (_, r_om), dt = timed(lambda: ix.search_rows(qs[:nq], k=10))
    exact_qps = nq / dt
    row("omniret local", "flat", "-", recall(r_om, truth[:nq]), exact_qps, vec.nbytes, None)
    flat.reset()  # free its copy of the vectors

    configs = [
        ("hnsw", dict(m=args.m, ef_construction=args.ef_construction, storage="fp32", rerank=1), "ef", args.ef),
        ("hnsw", dict(m=args.m, ef_construction=args.ef_construction, storage="int8", rerank=args.rerank), "ef", args.ef),
        ("ivfpq", dict(nlist=args.nlist, pq_m=args.pq_m, rerank=args.ivf_rerank), "nprobe", args.nprobe),
    ]
    for kind, params, knob, values in configs:
        ix.set_kind("flat")  # drop the previous structure; vectors are shared
        ix.hnsw_params = ANNParams(**params)
        ix.set_kind(kind)
        graph, build = timed(ix._ensure_graph)
        mem = graph.nbytes()
        label = f"{kind}-{params.get('storage', 'pq')}"
        for val in values:
            setattr(ix.hnsw_params, "ef_search" if knob == "ef" else "nprobe", val)
            (_, r_om), dt = timed(lambda: ix.search_rows(qs, k=10))
            row("omniret local", label, f"{knob}={val}, rerank={ix.hnsw_params.rerank}", recall(r_om, truth),
                len(qs) / dt, mem, build)
            if knob == "ef":
                sp = faiss.SearchParametersHNSW()
                sp.efSearch = val
            else:
                sp = faiss.SearchParametersIVF()
                sp.nprobe = val
            (_, r_raw), dt = timed(lambda sp=sp, g=graph: g.faiss.search(qs, 10, params=sp))
            row("faiss raw", label, f"{knob}={val}", recall(r_raw, truth), len(qs) / dt, mem, build)
    print(f"exact ground truth for {len(qs)} queries: {t_truth:.1f}s; exact omniret QPS {exact_qps:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows_out}, f, indent=1)


if __name__ == "__main__":
    main()
