#!/usr/bin/env python
"""Cold start of a one-query CLI search on the default model: each run is a fresh ``omniret`` process.

Side by side, interleaved: the default (ONNX Runtime on CPU) and ``OMNIRET_RUNTIME=torch`` (PyTorch +
transformers, the previous runtime); plus the floor every run pays, ``python -c "import torch"``. Prints the
best and median wall time and the median CPU time (user + system) of each. ONNX exports are built once
before timing (they are cached per machine), and the index is built if missing.

    python benchmarks/bench_cold_start.py --index demo-index --runs 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "sample-corpus"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", default="demo-index")
    ap.add_argument("--query", default="a cup of coffee")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    omniret = [sys.executable, "-m", "omniret"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not Path(args.index).is_dir():
        subprocess.run([*omniret, "index", str(CORPUS), "-i", args.index, "-q"], env=env, check=True)
    search = [*omniret, "search", "--index", args.index, args.query]
    configs = {
        "omniret search (default: ONNX Runtime)": (search, env),
        "omniret search (OMNIRET_RUNTIME=torch)": (search, {**env, "OMNIRET_RUNTIME": "torch"}),
        'python -c "import torch" (floor)': ([sys.executable, "-c", "import torch"], env),
    }
    for cmd, e in configs.values():
        run(cmd, e)  # warm-up: ONNX export on first use, OS file cache
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
    for _ in range(args.runs):
        for name, (cmd, e) in configs.items():
            times[name].append(run(cmd, e))
    print(f"{args.runs} runs each, interleaved; query {args.query!r} on {args.index}")
    print(f"{'command':<42}{'best wall s':>12}{'median wall s':>15}{'median CPU s':>14}")
    for name, ts in times.items():
        walls, cpus = [w for w, _ in ts], [c for _, c in ts]
        print(f"{name:<42}{min(walls):>12.2f}{statistics.median(walls):>15.2f}{statistics.median(cpus):>14.2f}")


if __name__ == "__main__":
    main()
