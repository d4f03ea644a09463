"""Concurrent writers: processes that open/add/save the same index at once lose no update, and the index
opens at every moment (a concurrent reader checks); two incremental indexing runs of different folders into
one index keep both folders' documents."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from _helpers import ROOT, HashEncoder, make_index

from omniret.index import FlatIndex
from omniret.index.generations import GEN_PATTERN

WRITER = r"""
import sys
import numpy as np
from omniret.index import FlatIndex, Record

path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(abs(hash(name)) % 1000)
for i in range(n):
    ix = FlatIndex.open(path)
    v = rng.standard_normal((1, ix.dim)).astype(np.float32)
    ix.add(v / np.linalg.norm(v), [Record(id=f"{name}-{i}", modality="text", txt=name)])
    if i % 3 == 0:
        ix.remove([f"{name}-{i - 1}"])  # removals merge too
    ix.save()
print("done")
"""

READER = r"""
import sys, time
from omniret.index import FlatIndex
path, seconds = sys.argv[1], float(sys.argv[2])
end, opened = time.time() + seconds, 0
while time.time() < end:
    ix = FlatIndex.open(path)  # raises (non-zero exit) if a half-written state is ever visible
    assert len(ix) == len(set(ix.ids()))
    opened += 1
print("opened", opened)
"""

N = 25


def _spawn(code, *args):
    """Start ``python -c code args`` with this checkout's ``src`` and the suite's helpers importable."""
    here = str(ROOT / "tests" / "reliability")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), here]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_processes_many_saves_lose_nothing(tmp_path):
    path = tmp_path / "ix"
    make_index(path, n=3)
    procs = [_spawn(WRITER, str(path), name, str(N)) for name in ("a", "b")]
    reader = _spawn(READER, str(path), "6")
    for p in [*procs, reader]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    ix = FlatIndex.open(path)
    want = {"d0", "d1", "d2"}
    for name in ("a", "b"):
        want |= {f"{name}-{i}" for i in range(N)} - {f"{name}-{i - 1}" for i in range(0, N, 3)}
    assert set(ix.ids()) == want and len(ix) == len(want)
    # every surviving vector is the one its writer added (rows were not mixed up by the merges)
    norms = np.linalg.norm(ix.vectors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert [p.name for p in path.iterdir() if GEN_PATTERN.fullmatch(p.name)] == [ix.manifest.generation]


INDEXER = r"""
import pathlib, sys, time
from omniret.retriever import Retriever
from _helpers import HashEncoder

index, folder, barrier = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
r = Retriever.open(index, HashEncoder())
print(r.index_corpus(folder, save=False))
# both runs have opened and encoded before either saves: the overlap that used to lose one run's documents
(barrier / pathlib.Path(folder).name).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)
r.index.save()
"""


def test_two_indexing_runs_into_one_index_keep_both(tmp_path):
    from omniret.retriever import Retriever

    folders = []
    for name in ("one", "two"):
        f = tmp_path / name
        f.mkdir()
        for i in range(40):
            (f / f"doc{i}.txt").write_text(f"{name} document number {i}")
        folders.append(f)
    ix = tmp_path / "ix"
    r = Retriever.create(ix, HashEncoder())
    r.index.save()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [_spawn(INDEXER, str(ix), str(f), str(barrier)) for f in folders]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    ids = FlatIndex.open(ix).ids()
    # both folders have doc0.txt .. doc39.txt: the second source's ids are scoped, nothing is overwritten
    assert len(ids) == 80 and len(set(ids)) == 80
    texts = {FlatIndex.open(ix).get(i).txt for i in ids}
    assert texts == {f"{n} document number {i}" for n in ("one", "two") for i in range(40)}


def test_a_blocked_writer_names_the_holder(tmp_path):
    from omniret.index.lock import IndexLock, IndexLockedError

    path = tmp_path / "ix"
    make_index(path, n=2)
    with IndexLock(path):  # flock conflicts between two open file descriptions, even in one process
        ix = FlatIndex.open(path)
        ix.remove(["d0"])
        ix.lock_timeout = 0.2
        try:
            ix.save()
            raise AssertionError("saved while another writer held the lock")
        except IndexLockedError as e:
            assert f"another writer holds the index lock (pid {os.getpid()} on" in str(e)
            assert "gave up after 0.2s" in str(e)
    ix.save()  # the holder is gone: the save goes through
    assert FlatIndex.open(path).ids() == ["d1"]
