"""Benchmark builders: layout, disjoint train/test splits, licences, and that the result evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _eval_helpers import ColourEncoder

from omniret.data.beir import load_beir
from omniret.data.builders import emoji_bench
from omniret.data.builders.debian import DebianFetchError, default_cache_dir, fetch_deb
from omniret.data.builders.wordnet import build_wordnet_benchmark, parse_data_line
from omniret.data.mbeir import discover_tasks, global_pool_file, read_pool, read_queries
from omniret.eval.runner import MBeirOptions, evaluate_mbeir

SAMPLE_EMOJI = Path(__file__).resolve().parents[2] / "examples" / "sample-corpus" / "emoji"
_MARKER = ".omniret-extracted"  # fetch_deb reuses a package directory that carries this marker


def _fake_package(cache: Path, name: str, files: dict[str, str]) -> None:
    """A pre-extracted Debian package in the cache, so fetch_deb needs no apt (offline tests)."""
    root = cache / name
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / _MARKER).write_text(f"{name}_1.0_all.deb\n")


_WN = {
    "data.noun": [
        "  1 This software and database is being provided to you, the LICENSEE",
        '00000001 05 n 02 dog 0 domestic_dog 0 000 | a tame carnivore kept as a pet; "the dog barked"',
        "00000002 05 n 01 cat 0 000 | a small furry feline",
        "00000003 05 n 01 bank 0 000 | sloping land beside a river",
        "00000004 06 n 01 bank 0 000 | an institution that lends money",
        "00000005 05 n 01 horse 0 000 | a large hoofed animal ridden by people",
    ],
    "data.verb": ["00000010 29 v 01 run 0 000 | move fast on foot"],
    "data.adj": ["00000020 00 a 01 red(a) 0 000 | of the colour of blood"],
    "data.adv": ["00000030 02 r 01 quickly 0 000 | with speed"],
}


@pytest.fixture(scope="module")
def wordnet_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("debcache")
    files = {f"usr/share/wordnet/{k}": "\n".join(v) + "\n" for k, v in _WN.items()}
    files["usr/share/doc/wordnet-base/copyright"] = "WordNet 3.0 licence text\n"
    _fake_package(cache, "wordnet-base", files)
    return cache


def test_parse_data_line():
    s = parse_data_line(_WN["data.noun"][1], "n")
    assert (s.id, s.lemmas, s.definition) == ("n00000001", "dog, domestic dog", "a tame carnivore kept as a pet")
    assert parse_data_line(_WN["data.adj"][0], "a").lemmas == "red"  # adjective marker dropped
    assert parse_data_line(_WN["data.noun"][0], "n") is None  # licence header


def test_wordnet_benchmark_is_disjoint_and_evaluable(wordnet_cache, tmp_path):
    out = tmp_path / "wordnet"
    m = build_wordnet_benchmark(out, wordnet_cache, test_docs=3, test_queries=2, seed=1)
    test, train = load_beir(out), load_beir(out / "train", split="train")
    assert m["test"] == {"queries": 2, "docs": 3} and len(test.queries) == 2
    assert not set(test.corpus.values()) & set(train.corpus.values())
    assert not set(test.queries) & set(train.queries)
    assert m["test"]["docs"] + m["train"]["docs"] == 7  # 8 synsets, "bank" is one document for two senses
    for q, rel in test.qrels.items():
        assert len(rel) == 1 and next(iter(rel)) in test.corpus and q in test.queries
    assert (out / "LICENSE.wordnet").read_text() == "WordNet 3.0 licence text\n"
    assert build_wordnet_benchmark(tmp_path / "again", wordnet_cache, 3, 2, seed=1)["test"] == m["test"]


def _sample_emoji(cache_dir=None, size=96):
    from PIL import Image

    for i, p in enumerate(sorted(SAMPLE_EMOJI.glob("*.png"))):
        yield 0x1F300 + i, p.stem.replace("_", " "), Image.open(p).convert("RGB").resize((size, size))


@pytest.fixture(scope="module")
def emoji_root(tmp_path_factory):
    cache = tmp_path_factory.mktemp("debcache")
    _fake_package(cache, "fonts-noto-color-emoji", {"usr/share/doc/fonts-noto-color-emoji/copyright": "OFL-1.1\n"})
    mp = pytest.MonkeyPatch()
    # the font renderer is another module's job (tested there); here the sample corpus's rendered emoji feed it
    mp.setattr(emoji_bench, "iter_emoji", _sample_emoji)
    root = tmp_path_factory.mktemp("emoji")
    manifest = emoji_bench.build_emoji_benchmark(root, cache, size=32, test_fraction=0.5, seed=0)
    mp.undo()
    return root, manifest


def test_emoji_layout_and_split(emoji_root):
    root, m = emoji_root
    n_train, n_test = m["train"]["emoji"], m["test"]["emoji"]
    assert n_train > 0 and n_test > 0
    assert [t.name for t in discover_tasks(root, "test")] == ["emoji_task0", "emoji_task3"]
    for split, n in (("train", n_train), ("test", n_test)):
        pool = read_pool(global_pool_file(root, split))
        assert len(pool) == 2 * n and {r.modality for r in pool} == {"image", "text"}
    test_ids = {r.id for r in read_pool(global_pool_file(root, "test"))}
    train_ids = {r.id for r in read_pool(global_pool_file(root, "train"))}
    assert not test_ids & train_ids
    q = read_queries(root / "query/test/mbeir_emoji_task3_test.jsonl")[0]
    assert q.modality == "image" and q.pos[0] in test_ids and (root / q.img_path).is_file()
    assert (root / "LICENSE.noto-emoji").read_text() == "OFL-1.1\n"
    assert json.loads((root / "manifest.json").read_text())["dataset_id"] == 10


def test_emoji_benchmark_evaluates(emoji_root):
    root, m = emoji_root
    res = evaluate_mbeir(root, ColourEncoder(), MBeirOptions(pools=("local", "global"), cache_dir=None))
    assert len(res["tasks"]) == 4
    assert all(e["n_queries"] == m["test"]["emoji"] for e in res["tasks"])
    train = evaluate_mbeir(root, ColourEncoder(), MBeirOptions(split="train", cache_dir=None))
    assert all(e["n_queries"] == m["train"]["emoji"] for e in train["tasks"])


def test_real_font_build_when_cached(tmp_path):
    """With the real Noto package already in the default cache, build a small real benchmark."""
    cache = default_cache_dir()
    if not (cache / "fonts-noto-color-emoji" / _MARKER).is_file():
        pytest.skip("fonts-noto-color-emoji not in the local Debian cache (run `omniret data build emoji` once)")
    try:
        fetch_deb("fonts-noto-color-emoji", cache)
    except DebianFetchError as e:  # pragma: no cover
        pytest.skip(str(e))
    m = emoji_bench.build_emoji_benchmark(tmp_path, cache, size=32, limit=20)
    assert m["train"]["emoji"] + m["test"]["emoji"] == 20
    first = read_pool(global_pool_file(tmp_path, "test"))
    assert any(r.txt and r.txt.islower() for r in first)  # Unicode names as captions
