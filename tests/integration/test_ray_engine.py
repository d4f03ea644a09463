"""`--engine ray`: Ray Data encoding on a local ``ray.init(num_cpus=2)`` equals local encoding, and a job
killed with SIGKILL resumes keeping the shards it had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the ray extra is not installed")

SRC = Path(__file__).resolve().parents[2] / "src"


def _reap_ray_workers(sids: set[int]) -> None:
    """SIGKILL Ray worker processes of these sessions (ours, the killed job's) that outlive ``ray.shutdown()``:
    an actor process can linger for minutes, holding a model in memory, after its raylet is gone."""
    time.sleep(1)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[3]) in sids and cmd.startswith(b"ray::") and int(stat.parent.name) != os.getpid():
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except OSError:
                pass


def _corpus(root: Path, n_text: int) -> Path:
    from tiny_models import random_image

    root.mkdir(parents=True)
    for i in range(3):
        random_image(40 + 8 * i, 48, seed=i).save(root / f"img{i}.png")
    (root / "img1.txt").write_text("a noisy square with a caption")  # image+text document
    for i in range(n_text):
        (root / f"t{i:03d}.txt").write_text(f"document number {i} talks about topic {i % 7}")
    return root


_KILLED_JOB = """
import sys, ray
sys.path.insert(0, {src!r})
from omniret.data.corpus import load_corpus
from omniret.encoders import load_encoder
from omniret.integrations.ray import encode_with_ray
ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
items, _ = load_corpus({corpus!r})
encode_with_ray(items, load_encoder("default"), {out!r}, shard_size=3, batch_size=3)
"""


def test_ray_vectors_equal_local_and_killed_job_resumes(tmp_path):
    from omniret.data.corpus import load_corpus
    from omniret.encoders import load_encoder
    from omniret.index.shards import SHARDS, iter_shards, read_state
    from omniret.integrations.ray import encode_with_ray

    corpus = _corpus(tmp_path / "corpus", n_text=40)
    out = tmp_path / "shards"
    script = _KILLED_JOB.format(src=str(SRC), corpus=str(corpus), out=str(out))
    job = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and job.poll() is None:
            if (out / SHARDS).is_file() and read_state(out)["shards"]:
                break
            time.sleep(0.02)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        job.wait()
    state = read_state(out)
    assert not state["complete"] and 0 < len(state["shards"]) < 15, "the job must die mid-way"
    kept = {s["index"]: (out / f"part-{s['index']:05d}.npy").stat().st_mtime_ns for s in state["shards"]}

    items, _ = load_corpus(corpus)
    enc = load_encoder("default")
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    try:
        encode_with_ray(items, enc, out, shard_size=3, batch_size=3, workers=1)
    finally:
        ray.shutdown()
        _reap_ray_workers({os.getsid(0), job.pid})
    state = read_state(out)
    assert state["complete"] and len(state["shards"]) == 15 and state["manifest"]["count"] == 43
    for i, mtime in kept.items():  # finished shards were kept, not recomputed
        assert (out / f"part-{i:05d}.npy").stat().st_mtime_ns == mtime

    vecs, ids = [], []
    for v, recs in iter_shards(out):
        vecs.append(v)
        ids += [r.id for r in recs]
    assert ids == [it.id for it in items]
    want = enc.encode_documents(items)
    np.testing.assert_allclose(np.concatenate(vecs), want, rtol=0, atol=1e-5)
    assert json.loads((out / SHARDS).read_text())["key"]


def test_cli_engine_ray_index_and_eval_equal_local(tmp_path, monkeypatch, capsys):
    from _cli import run
    from _eval_helpers import build_colour_mbeir

    from omniret.index import open_index

    corpus = _corpus(tmp_path / "corpus", n_text=6)
    mbeir = build_colour_mbeir(tmp_path / "mbeir")
    monkeypatch.setenv("OMNIRET_CACHE", str(tmp_path / "cache"))
    results = {}
    try:
        code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", str(tmp_path / "ray-ix"),
                             "--engine", "ray", "--workers", "2", "-q")
        assert code == 0 and "added 9" in out, err
        for engine in ("ray", "local"):  # eval's pool encoding on the same engine
            o = tmp_path / f"eval-{engine}"
            extra = ["--engine", "ray", "--workers", "2"] if engine == "ray" else []
            code, _, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(mbeir), "--model", "default",
                               "--pool", "both", "--out", str(o), "--no-cache", *extra)
            assert code == 0, err
            results[engine] = json.loads((o / "results.json").read_text())["tasks"]
    finally:
        ray.shutdown()
        _reap_ray_workers({os.getsid(0)})
    keys = ("name", "pool", "recall@1", "recall@5", "recall@10", "modality_accuracy@1")
    assert [[e[k] for k in keys] for e in results["ray"]] == [[e[k] for k in keys] for e in results["local"]]
    assert not any((tmp_path / "cache" / "ray-shards").iterdir())  # shards dropped once the index has them
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", str(tmp_path / "local-ix"), "-q")
    assert code == 0, err
    a, b = open_index(tmp_path / "ray-ix"), open_index(tmp_path / "local-ix")
    pa, pb = next(a.iter_pages(100, vectors=True)), next(b.iter_pages(100, vectors=True))
    assert [r.id for r in pa[0]] == [r.id for r in pb[0]] and [r.to_dict() for r in pa[0]] == [r.to_dict() for r in pb[0]]
    np.testing.assert_allclose(pa[1], pb[1], rtol=0, atol=1e-5)
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", "x", "--workers", "2")
    assert code == 1 and "need --engine ray" in err
