#!/usr/bin/env python
"""Default model on CPU, side by side in one process: PyTorch fp32, ONNX Runtime fp32, int8.

``--model`` (default: the default encoder; ``conse-minilm`` or ``omniret-bridge``, which share the frozen
towers). Text: sentence-transformers ``encode()`` fp32 on the same all-MiniLM-L6-v2 weights is the baseline (text
drift compares the 384-d MiniLM content part); images: our own PyTorch fp32 EfficientNet-Lite0 path. Each configuration gets one warm-up pass, then the best
of ``--repeats`` timed passes is kept, in rounds that interleave the configurations so that load from other
processes on a shared machine hits all of them alike. Prints items/s, the ratio to the baseline, and the
drift of each embedding against our fp32 PyTorch embedding (max |diff|, mean and minimum cosine).

    python benchmarks/bench_cpu_inference.py --threads 1 --n-text 1000 --n-images 128 [--model default]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text_encoding import make_sentences  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "sample-corpus"


def timed_rounds(configs: dict, repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best wall time and last output of each ``name -> fn``; one warm-up each, then interleaved rounds."""
    out = {name: fn() for name, fn in configs.items()}  # warm-up (exports, allocator, kernels)
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(repeats):
        for name, fn in configs.items():
            t = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, out


def content(e: np.ndarray) -> np.ndarray:
    """The unit 384-d MiniLM part of an embedding (omniret-bridge appends a modality part to it)."""
    c = e[:, :384]
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def drift(e: np.ndarray, ref: np.ndarray) -> str:
    cos = (e * ref).sum(1)
    return f"{np.abs(e - ref).max():>10.2e}{cos.mean():>10.5f}{cos.min():>10.5f}"


def report(title: str, n: int, best: dict, out: dict, baseline: str, ref: str) -> None:
    print(f"\n{title} ({n} items; ratio = baseline time / time; drift vs {ref})")
    print(f"{'configuration':<34}{'items/s':>10}{'ratio':>8}{'max|diff|':>10}{'mean cos':>10}{'min cos':>10}")
    for name in best:
        print(f"{name:<34}{n / best[name]:>10.1f}{best[baseline] / best[name]:>8.2f}{drift(out[name], out[ref])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-text", type=int, default=1000)
    ap.add_argument("--n-images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="default", help="a registered encoder of the conse-minilm towers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from omniret import Item
    from omniret.encoders import load_encoder
    from omniret.encoders.minilm import default_minilm_path

    encoders = {
        "omniret fp32 (PyTorch)": load_encoder(args.model, runtime="torch"),
        "omniret fp32 (ONNX Runtime)": load_encoder(args.model, runtime="onnx"),
        "omniret int8 (ONNX Runtime)": load_encoder(args.model, precision="int8"),
    }
    st = SentenceTransformer(str(default_minilm_path()), device="cpu")
    print(
        f"model {encoders['omniret fp32 (PyTorch)'].name}, "
        f"torch {torch.__version__}, threads {args.threads}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, batch {args.batch_size}"
    )

    sents = make_sentences(args.n_text)
    text = {"sentence-transformers fp32 (baseline)": lambda: st.encode(
        sents, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True
    )}
    text |= {k: (lambda e=e: content(e.encode_documents(sents, batch_size=args.batch_size))) for k, e in encoders.items()}
    best, out = timed_rounds(text, args.repeats)
    report("Text", len(sents), best, out, "sentence-transformers fp32 (baseline)", "omniret fp32 (PyTorch)")

    files = sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = [Item(image=str(files[i % len(files)])) for i in range(args.n_images)]
    img = {k: (lambda e=e: e.encode_documents(images, batch_size=args.batch_size)) for k, e in encoders.items()}
    best, out = timed_rounds(img, args.repeats)
    report("Images (decode + preprocess + tower + ConSE)", len(images), best, out,
           "omniret fp32 (PyTorch)", "omniret fp32 (PyTorch)")


if __name__ == "__main__":
    main()
