"""Crash injection: a save is killed with SIGKILL before each of its file-system steps; the index then opens
with exactly the old or exactly the new contents, never a mix, and the next save cleans up after the crash.

The child process counts its own file-system mutations through a Python audit hook (``open`` for writing,
``os.mkdir``, ``os.rename``/``os.replace``, ``os.remove``, ``os.rmdir``, ``shutil.rmtree``) and sends itself
SIGKILL at the N-th one; N runs over every step a save takes, plus "after the save returned".
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from _helpers import make_index, run_python, unit

from omniret.index import FlatIndex, Record
from omniret.index.generations import GEN_PATTERN

CHILD = r"""
import os, signal, sys
import numpy as np
from omniret.index import FlatIndex, Record

path, kill_at = sys.argv[1], int(sys.argv[2])
ix = FlatIndex.open(path)
ix.remove(["d0", "d1"])
v = np.random.default_rng(7).standard_normal((3, ix.dim)).astype(np.float32)
ix.upsert(v / np.linalg.norm(v, axis=1, keepdims=True), [Record(id=i, modality="text", txt="new") for i in ("d2", "n1", "n2")])
steps = 0
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def hook(event, args):
    global steps
    if event == "open":
        mode, flags = args[1], args[2]
        if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE):
            return
    elif event not in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
        return
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
ix.save()
print("steps", steps)
"""


def _state(path):
    ix = FlatIndex.open(path)
    return sorted(ix.ids()), {i: ix.vectors[ix.ids().index(i)].copy() for i in ix.ids()}


# HNSW: its save is the flat save plus the graph file, so every flat step is covered too
@pytest.mark.parametrize("kind", ["hnsw"])
def test_kill_at_every_save_step(tmp_path, kind):
    base = tmp_path / "base"
    make_index(base, n=12, kind=kind)
    old_ids, old_vecs = _state(base)
    # the dry run: how many steps a save takes, and what the new state is
    dry = tmp_path / "dry"
    os.system(f"cp -a {base} {dry}")
    res = run_python(CHILD, str(dry), "0")
    assert res.returncode == 0, res.stderr
    n_steps = int(res.stdout.split()[-1])
    assert n_steps >= 8  # lock, mkdir, marker, vectors, records, [graph], manifest temp, rename, cleanup
    new_ids, new_vecs = _state(dry)
    assert new_ids != old_ids
    outcomes = []
    for kill_at in range(1, n_steps + 1):
        path = tmp_path / f"k{kill_at}"
        os.system(f"cp -a {base} {path}")
        res = run_python(CHILD, str(path), str(kill_at))
        assert res.returncode == -signal.SIGKILL, (kill_at, res.stderr)
        ids, vecs = _state(path)
        assert ids in (old_ids, new_ids), kill_at
        want = old_vecs if ids == old_ids else new_vecs
        for i in ids:
            np.testing.assert_array_equal(vecs[i], want[i])
        outcomes.append("old" if ids == old_ids else "new")
        # the next save succeeds and leaves exactly one generation: stray ones of the crash are removed
        ix = FlatIndex.open(path)
        ix.add(unit(np.random.default_rng(9), 1), [Record(id="after", modality="text")])
        ix.save()
        gens = [p.name for p in path.iterdir() if GEN_PATTERN.fullmatch(p.name)]
        assert gens == [ix.manifest.generation], (kill_at, gens)
        assert sorted(FlatIndex.open(path).ids()) == sorted([*ids, "after"])
    print(f"{n_steps} save steps killed: {outcomes.count('old')} old, {outcomes.count('new')} new")
    # a crash before the manifest rename keeps the old state, after it the new one
    assert outcomes[0] == "old" and outcomes[-1] == "new" and outcomes == sorted(outcomes, key=["old", "new"].index)
