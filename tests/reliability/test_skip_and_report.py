"""A folder with bad files indexes all its good files in one run and lists every bad one (library and CLI);
a save never deletes a folder it did not write; sources never overwrite each other."""

from __future__ import annotations

import os

from _helpers import HashEncoder, register_hash_encoder, snapshot
from PIL import Image

from _cli import run as run_cli
from omniret.index import FlatIndex
from omniret.index.generations import OWNER_MARKER
from omniret.retriever import Retriever

BAD = ["broken.png", "trunc.jpg", "pipe.txt", "zero.txt", "passwd.txt", "bad\\xff.txt", "latin.md"]


def _messy_folder(root):
    root.mkdir()
    for i in range(5):
        (root / f"good{i}.txt").write_text(f"good text {i}")
    Image.new("I;16", (8, 8), 40000).save(root / "deep.png")  # 16-bit: must not turn white
    Image.new("RGB", (8, 8), (10, 200, 10)).save(root / "green.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "trunc.jpg").write_bytes((root / "green.jpg").read_bytes()[:40])
    os.mkfifo(root / "pipe.txt")
    (root / "zero.txt").symlink_to("/dev/zero")
    secret = root.parent / "secret.txt"
    secret.write_text("root:x:0:0:root")
    (root / "passwd.txt").symlink_to(secret)
    (root / os.fsdecode(b"bad\xff.txt")).write_text("fine content, bad name")
    (root / "latin.md").write_bytes(b"caf\xe9")
    return root


class CountingForward(HashEncoder):
    forwards = 0

    def forward(self, batch):
        CountingForward.forwards += 1
        return super().forward(batch)


def test_bad_files_are_skipped_and_listed(tmp_path):
    folder = _messy_folder(tmp_path / "messy")
    r = Retriever.create(tmp_path / "ix", CountingForward())
    report = r.index_corpus(folder)
    assert report.added == 7 and report.total == 7
    # the bad images are found by preparing items alone; the 7 good ones still go through the model as one batch
    assert CountingForward.forwards == 1
    assert sorted(s.where.rsplit("/", 1)[-1] for s in report.skipped) == sorted(BAD)
    ix = FlatIndex.open(tmp_path / "ix")
    assert sorted(ix.ids()) == ["deep.png", "good0.txt", "good1.txt", "good2.txt", "good3.txt", "good4.txt", "green.jpg"]
    assert all("root:x" not in (rec.txt or "") for rec in ix.records())
    # a second run: nothing new, the skipped files are listed again, nothing is removed
    again = Retriever.open(tmp_path / "ix", CountingForward()).index_corpus(folder)
    assert (again.added, again.removed, again.unchanged, len(again.skipped)) == (0, 0, 7, 7)


def test_cli_lists_skipped_files_and_exits_3(tmp_path, monkeypatch, capsys):
    register_hash_encoder()
    folder = _messy_folder(tmp_path / "messy")
    code, out, err = run_cli(monkeypatch, capsys, "index", str(folder), "--index", str(tmp_path / "ix"),
                             "-m", "hash-test", "-q")
    assert code == 3, err
    assert "added 7" in out and "skipped 7" in out
    listed = err.strip().splitlines()
    assert listed[0].startswith("skipped 7 input(s)") and len(listed) == 8
    for name in BAD:
        assert any(name in line for line in listed[1:]), name
    assert "\udcff" not in err and "Traceback" not in err
    # --strict: the first bad file is the error, nothing is written
    before = snapshot(tmp_path / "ix")
    (folder / "good9.txt").write_text("new")
    code, out, err = run_cli(monkeypatch, capsys, "index", str(folder), "--index", str(tmp_path / "ix"), "--strict")
    assert code == 1 and err.count("\n") == 1 and snapshot(tmp_path / "ix") == before


def test_saves_never_delete_user_folders(tmp_path):
    user = tmp_path / "photos"
    (user / "gen-2023-photos").mkdir(parents=True)
    (user / "gen-2023-photos" / "kid.jpg").write_bytes(b"precious")
    r = Retriever.create(tmp_path / "ix", HashEncoder())
    try:
        Retriever.create(user, HashEncoder())
        raise AssertionError("a non-empty user folder was accepted as an index folder")
    except Exception as e:  # noqa: BLE001 - the message is what matters
        assert "folder is not empty and holds no omniret index (gen-2023-photos)" in str(e)
    # folders a user (or another tool) puts inside an index, even look-alikes of generation names, survive saves
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha")
    r.index_corpus(folder)
    keep = [tmp_path / "ix" / n for n in ("gen-2023-photos", "gen-000099-0123abcd", "notes")]
    for d in keep:
        d.mkdir()
        (d / "file.txt").write_text("mine")
    (folder / "b.txt").write_text("beta")
    r.index_corpus(folder)
    r.index_corpus(folder)
    for d in keep:
        assert (d / "file.txt").read_text() == "mine"
    assert (user / "gen-2023-photos" / "kid.jpg").read_bytes() == b"precious"
    # a leftover of a crashed save carries this index's marker and is cleaned up
    stray = tmp_path / "ix" / "gen-000098-0123abcd"
    stray.mkdir()
    (stray / OWNER_MARKER).write_text(FlatIndex.open(tmp_path / "ix").manifest.index_id)
    (folder / "c.txt").write_text("gamma")
    r.index_corpus(folder)
    assert not stray.exists()


def test_two_sources_with_same_paths_keep_both(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for f, word in ((one, "apple"), (two, "pear")):
        f.mkdir()
        (f / "same.txt").write_text(f"{word} text")
    r = Retriever.create(tmp_path / "ix", HashEncoder())
    r.index_corpus(one)
    r.index_corpus(two)
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"did": "same.txt", "txt": "plum text", "modality": "text"}\n')
    r.index_corpus(pool)
    texts = sorted(rec.txt for rec in r.index.records())
    assert texts == ["Plum text.", "apple text", "pear text"]  # a pool's text goes through UniIR's formatting
    # re-running each source changes nothing: the scoped ids are stable
    for src in (one, two, pool):
        rep = r.index_corpus(src)
        assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 0, 0, 1)


def test_16bit_and_float_images_convert(tmp_path):
    import numpy as np

    from omniret.images import load_image

    p16 = tmp_path / "g16.png"
    Image.new("I;16", (4, 4), 32896).save(p16)  # 32896 / 257 = 128
    assert np.asarray(load_image(p16))[0, 0].tolist() == [128, 128, 128]
    pf = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(pf)
    assert np.asarray(load_image(pf))[0, 0].tolist() == [128, 128, 128]
    pi = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 4), 65535, np.int32), mode="I").save(pi)
    assert np.asarray(load_image(pi))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_image(Image.fromarray(np.full((4, 4), 200, np.int32), mode="I")))[0, 0].tolist() == [200] * 3
