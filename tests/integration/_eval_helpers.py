"""Shared by the eval integration tests: a transparent colour-word encoder and a tiny M-BEIR directory.

``ColourEncoder`` is a real :class:`omniret.Encoder` whose embedding is readable by hand, so expected
metric values can be derived exactly:

* one dimension per colour word; text counts the colour words, an image lights its nearest palette colour;
* two "modality" dimensions (text, image) weighted 0.5. A query's modality dimension follows its
  instruction ("image" -> image, "caption" -> text), else its own modality. This reproduces MM-Embed's
  modality bias (a text query prefers a text candidate) and lets instructions fix it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omniret.encoders.base import Encoder

PALETTE = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20)}
COLOURS = list(PALETTE)
TEXT_DIM, IMAGE_DIM = len(COLOURS), len(COLOURS) + 1


class ColourEncoder(Encoder):
    name = "colour-test"
    dim = len(COLOURS) + 2
    family = "test"

    def _vec(self, item, is_query: bool) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for t in item.texts:
            for w in t.lower().replace(".", " ").split():
                if w in PALETTE:
                    v[COLOURS.index(w)] += 1
        for img in item.images:
            mean = np.asarray(img.load(), dtype=np.float32).reshape(-1, 3).mean(0)
            v[int(np.argmin([np.abs(mean - np.array(c)).sum() for c in PALETTE.values()]))] += 1
        inst = (item.instruction or "").lower() if is_query else ""
        if "image" in inst:
            v[IMAGE_DIM] += 0.5
        elif "caption" in inst:
            v[TEXT_DIM] += 0.5
        else:
            v[IMAGE_DIM if item.images and not item.texts else TEXT_DIM] += 0.5
        return v

    def prepare(self, items, *, is_query):
        return np.stack([self._vec(it, is_query) for it in items])

    def forward(self, batch):
        return torch.from_numpy(batch)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_colour_mbeir(root: Path) -> Path:
    """Two tasks (colour_task0 text->image, colour_task3 image->text), local and global pools.

    task0 queries: red, green, blue, and "purple" whose positive is the yellow image (unfindable by colour).
    task3 queries: the red/green/blue images; positives are their captions.
    """
    for c, rgb in PALETTE.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), rgb).save(root / "images" / f"{c}.png")
    imgs = [{"did": f"7:{i + 1}", "txt": None, "img_path": f"images/{c}.png", "modality": "image"}
            for i, c in enumerate(COLOURS)]
    caps = [{"did": f"7:{i + 11}", "txt": c, "img_path": None, "modality": "text"} for i, c in enumerate(COLOURS)]
    _jsonl(root / "cand_pool/local/mbeir_colour_task0_cand_pool.jsonl", imgs)
    _jsonl(root / "cand_pool/local/mbeir_colour_task3_cand_pool.jsonl", caps)
    _jsonl(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", caps + imgs)
    q0 = [{"qid": f"7:{i + 1}", "query_txt": w, "query_img_path": None, "query_modality": "text",
           "pos_cand_list": [f"7:{p}"], "neg_cand_list": [], "task_id": 0}
          for i, (w, p) in enumerate([("red", 1), ("green", 2), ("blue", 3), ("purple", 4)])]
    q3 = [{"qid": f"7:{i + 101}", "query_txt": None, "query_img_path": f"images/{c}.png", "query_modality": "image",
           "pos_cand_list": [f"7:{i + 11}"], "neg_cand_list": [], "task_id": 3} for i, c in enumerate(COLOURS[:3])]
    _jsonl(root / "query/test/mbeir_colour_task0_test.jsonl", q0)
    _jsonl(root / "query/test/mbeir_colour_task3_test.jsonl", q3)
    for name, qs, tid in (("colour_task0", q0, 0), ("colour_task3", q3, 3)):
        lines = "".join(f"{q['qid']} 0 {q['pos_cand_list'][0]} 1 {tid}\n" for q in qs)
        (root / "qrels/test").mkdir(parents=True, exist_ok=True)
        (root / f"qrels/test/mbeir_{name}_test_qrels.txt").write_text(lines)
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    (root / "instructions/query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\n"
        "text\timage\tcolour\t7\tFind the image of this colour\tShow an image with this colour\n"
        "image\ttext\tcolour\t7\tWrite a caption for this picture\t\n"
    )
    return root
