"""A real M-BEIR-layout multimodal benchmark from Debian's Noto Color Emoji font (SIL OFL 1.1).

Every stand-alone emoji is rendered with Pillow (:mod:`omniret.data.builders.emoji`) and paired with its
Unicode name. Two tasks in UniIR's numbering:

* ``emoji_task0`` (text -> image): the name ("red apple") retrieves the picture;
* ``emoji_task3`` (image -> text): the picture retrieves its name.

Emoji are split into train/test by a seeded hash of the code point, and every pool is split-specific
(``cand_pool/local/mbeir_emoji_task<k>_<split>_cand_pool.jsonl``, MSCOCO's convention;
``cand_pool/global/mbeir_union_<split>_cand_pool.jsonl`` = that split's images *and* captions, the
heterogeneous pool where modality bias shows), so training never sees a test emoji.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from omniret.data.builders.debian import fetch_deb
from omniret.data.builders.emoji import EMOJI_PACKAGE, iter_emoji
from omniret.data.jsonl import write_jsonl
from omniret.errors import DataError
from omniret.io import atomic_write_json, atomic_write_text

#: dataset id used in qids/dids ("10:<n>"); UniIR's datasets take 0-9
EMOJI_DATASET_ID = 10
DATASET = "emoji"
_CAPTION_OFFSET = 100_000  # caption dids: image did + offset; image-query qids likewise

INSTRUCTIONS = [
    ("text", "image", ["Find the emoji that matches this name.", "Retrieve the emoji image described by this name."]),
    ("image", "text", ["Find the Unicode name of the emoji in this image.", "Retrieve a short name for this emoji."]),
]


def _is_test(seed: int, cp: int, test_fraction: float) -> bool:
    h = int(hashlib.sha1(f"{seed}:{cp:x}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < test_fraction


def write_caption_split(root: Path, name: str, ds: int, split: str, rows: list[tuple[int, str, str]]) -> None:
    """``rows``: (n, caption, image relpath). Writes one split of a caption<->image benchmark in the M-BEIR layout:
    task 0 (caption -> image) and task 3 (image -> caption) queries, qrels, local pools and the union pool."""
    imgs = [{"did": f"{ds}:{n}", "txt": None, "img_path": p, "modality": "image"} for n, _, p in rows]
    caps = [{"did": f"{ds}:{n + _CAPTION_OFFSET}", "txt": c, "img_path": None, "modality": "text"} for n, c, _ in rows]
    q0 = [{"qid": f"{ds}:{n}", "query_txt": c, "query_img_path": None, "query_modality": "text",
           "pos_cand_list": [f"{ds}:{n}"], "neg_cand_list": [], "task_id": 0} for n, c, _ in rows]
    q3 = [{"qid": f"{ds}:{n + _CAPTION_OFFSET}", "query_txt": None, "query_img_path": p, "query_modality": "image",
           "pos_cand_list": [f"{ds}:{n + _CAPTION_OFFSET}"], "neg_cand_list": [], "task_id": 3} for n, _, p in rows]
    for task, queries, pool in ((0, q0, imgs), (3, q3, caps)):
        write_jsonl(root / "query" / split / f"mbeir_{name}_task{task}_{split}.jsonl", queries)
        write_jsonl(root / "cand_pool" / "local" / f"mbeir_{name}_task{task}_{split}_cand_pool.jsonl", pool)
        atomic_write_text(root / "qrels" / split / f"mbeir_{name}_task{task}_{split}_qrels.txt",
                          "".join(f"{q['qid']} 0 {q['pos_cand_list'][0]} 1 {task}\n" for q in queries))
    write_jsonl(root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl", imgs + caps)


def _write_instructions(root: Path) -> None:
    lines = ["query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4"]
    for qm, cm, prompts in INSTRUCTIONS:
        cells = prompts + [""] * (4 - len(prompts))
        lines.append("\t".join([qm, cm, DATASET, str(EMOJI_DATASET_ID), *cells]))
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    (root / "instructions" / "query_instructions.tsv").write_text("\n".join(lines) + "\n")


def build_emoji_benchmark(
    out_dir: str | Path,
    cache_dir: Path | None = None,
    size: int = 96,
    test_fraction: float = 0.3,
    seed: int = 0,
    limit: int | None = None,
) -> dict:
    """Render the emoji and write the M-BEIR layout into ``out_dir``; returns the manifest.

    Args:
        out_dir: benchmark root (images under ``images/``, paths relative to it).
        cache_dir: Debian package cache (default ``~/.cache/omniret/debian``).
        size: rendered image side in pixels.
        test_fraction: share of emoji held out for test (by seeded hash of the code point).
        seed: split seed.
        limit: keep only the first ``limit`` emoji in code-point order (small builds for tests).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[tuple[int, int, str, str]]] = {"train": [], "test": []}
    for n, (cp, name, img) in enumerate(iter_emoji(cache_dir, size=size), 1):
        if limit is not None and n > limit:
            break
        rel = f"images/emoji_{cp:05x}.png"
        img.save(root / rel)
        splits["test" if _is_test(seed, cp, test_fraction) else "train"].append((n, cp, name, rel))
    if not splits["test"] or not splits["train"]:
        raise DataError(f"emoji split left an empty side (train {len(splits['train'])}, test {len(splits['test'])})")
    for split, rows in splits.items():
        write_caption_split(root, DATASET, EMOJI_DATASET_ID, split, [(n, nm, p) for n, _, nm, p in rows])
    _write_instructions(root)
    pkg = fetch_deb(EMOJI_PACKAGE, cache_dir)  # already fetched by iter_emoji; gives the licence file
    source = (pkg / ".omniret-extracted").read_text().strip()
    shutil.copyfile(pkg / f"usr/share/doc/{EMOJI_PACKAGE}/copyright", root / "LICENSE.noto-emoji")
    manifest = {
        "name": "emoji", "layout": "mbeir", "dataset_id": EMOJI_DATASET_ID,
        "tasks": ["emoji_task0 (text->image)", "emoji_task3 (image->text)"], "source": source,
        "licence": "images: SIL Open Font License 1.1 (Noto Color Emoji, see LICENSE.noto-emoji); "
                   "captions: Unicode character names (Unicode licence)",
        "image_size": size, "seed": seed, "test_fraction": test_fraction,
        "train": {"emoji": len(splits["train"])}, "test": {"emoji": len(splits["test"])},
    }
    (root / "README.md").write_text(_README.format(source=source, seed=seed, size=size,
                                                   train=len(splits["train"]), test=len(splits["test"])))
    atomic_write_json(root / "manifest.json", manifest)  # last and atomic: a complete build has it
    return manifest


_README = """# Emoji benchmark (built by omniret, M-BEIR layout)

Noto Color Emoji glyphs rendered at {size}x{size} px from the Debian package `{source}`, each paired with its
Unicode name. Tasks: `emoji_task0` (name -> image) and `emoji_task3` (image -> name); local pools per task
and a global pool of images and names together. Split (seed {seed}): {train} train emoji, {test} test emoji,
disjoint; every pool is split-specific.

Licences: the images are renderings of Noto Color Emoji, SIL Open Font License 1.1 (LICENSE.noto-emoji);
the names come from the Unicode Character Database (Unicode licence).
"""
