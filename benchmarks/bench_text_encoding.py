#!/usr/bin/env python
"""Text-encoding throughput: omniret's default encoder vs sentence-transformers on the same MiniLM weights.

Same process, same torch thread count, same sentences, same batch size; one warm-up pass each, then the
best of ``--repeats`` timed passes. Prints sentences/s for both, the ratio (ours / theirs) and the largest
embedding difference, in fp32 and in bf16 (``torch.autocast`` for both sides), then the bf16 drift of our
embeddings against our fp32 ones (max absolute difference, mean and minimum cosine).

    python benchmarks/bench_text_encoding.py --threads 1 --n 2000 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CORPUS_TEXTS = Path(__file__).resolve().parents[1] / "examples" / "sample-corpus" / "texts"


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` deterministic sentences of 3..150 words (log-uniform), drawn from the sample corpus vocabulary."""
    words: list[str] = []
    for f in sorted(CORPUS_TEXTS.glob("*.txt")):
        words.extend(f.read_text(encoding="utf-8").split())
    if not words:  # the corpus is absent: fall back to a fixed vocabulary
        words = "the quick brown fox jumps over a lazy dog near the red apple tree at dawn".split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(round(np.exp(rng.uniform(np.log(3), np.log(150)))))
        out.append(" ".join(rng.choice(words) for _ in range(length)))
    return out


def best_of(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm-up: allocator, oneDNN kernels, lazy init
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from omniret import load_encoder

    sents = make_sentences(args.n)
    ours = load_encoder("default")
    theirs = SentenceTransformer(str(ours.text.path), device="cpu")
    n_tok = sum(len(x) for x in theirs.tokenizer(sents, truncation=True, max_length=256)["input_ids"])
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(
        f"{args.n} sentences, {n_tok} tokens, batch {args.batch_size}, threads {args.threads}, "
        f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16}"
    )
    fp32_ours = bf16_ours = None
    print(f"{'precision':<10}{'omniret sent/s':>16}{'ST sent/s':>12}{'ratio':>8}{'max |diff|':>12}")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for precision in precisions:
        ours.precision = precision

        def run_ours():
            return ours.encode_documents(sents, batch_size=args.batch_size)

        def run_theirs(bf16: bool = precision == "bf16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return theirs.encode(sents, batch_size=args.batch_size, normalize_embeddings=True)

        t_ours, e_ours = best_of(run_ours, args.repeats)
        t_theirs, e_theirs = best_of(run_theirs, args.repeats)
        diff = float(np.abs(e_ours - np.asarray(e_theirs, dtype=np.float32)).max())
        fp32_ours = e_ours if precision == "fp32" else fp32_ours
        bf16_ours = e_ours if precision == "bf16" else bf16_ours
        print(
            f"{precision:<10}{args.n / t_ours:>16.1f}{args.n / t_theirs:>12.1f}{t_theirs / t_ours:>8.2f}"
            f"{diff:>12.2e}"
        )
    if "bf16" not in precisions:
        return
    if fp32_ours is None:  # drift needs an fp32 reference even when only bf16 was timed
        ours.precision = "fp32"
        fp32_ours = ours.encode_documents(sents, batch_size=args.batch_size)
    cos = (fp32_ours * bf16_ours).sum(1)
    print(
        f"bf16 drift vs fp32 (omniret): max |diff| {np.abs(fp32_ours - bf16_ours).max():.2e}, "
        f"mean cos {cos.mean():.6f}, min cos {cos.min():.6f}"
    )


if __name__ == "__main__":
    main()
