"""Write the ReMatch smoke/ablation training data: MMEB-train-format rows over the sample corpus's emoji.

Each emoji of ``examples/sample-corpus/emoji`` (Noto Color Emoji renders, OFL; see that folder's LICENSES.md)
gives two rows: its name → its image (``EmojiT2I``) and its image → its name (``EmojiI2T``), each with one
hard negative: the emoji whose name shares the most words with it (ties: the next name alphabetically), as
ReMatch trains on triplets (arXiv 2511.19278 §3). The first ``--train`` emoji (sorted by a seeded shuffle)
go to ``data/``, the rest to ``data-heldout/`` for evaluation.

    python scripts/make_rematch_smoke_data.py        # rewrites configs/rematch/data*/
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMOJI = ROOT / "examples" / "sample-corpus" / "emoji"
T2I = "Find the emoji that shows: "
I2T = "Name the emoji in this image."


def hard_negative(name: str, names: list[str]) -> str:
    words = set(name.split("_"))
    others = [n for n in names if n != name]
    # most shared words first, then the alphabetical neighbour
    return max(others, key=lambda n: (len(words & set(n.split("_"))), -((names.index(n) - names.index(name)) % len(names))))


def rows(names: list[str], pool: list[str]) -> tuple[list[dict], list[dict]]:
    t2i, i2t = [], []
    for n in names:
        neg = hard_negative(n, pool)
        text = n.replace("_", " ")
        t2i.append({"qry": T2I + text, "pos_text": "", "pos_image_path": f"{n}.png", "neg_text": "",
                    "neg_image_path": f"{neg}.png"})
        i2t.append({"qry": f"<|image_1|>\n{I2T}", "qry_image_path": f"{n}.png", "pos_text": text,
                    "neg_text": neg.replace("_", " ")})
    return t2i, i2t


def write(path: Path, data: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in data))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = sorted(p.stem for p in EMOJI.glob("*.png"))
    order = names[:]
    random.Random(args.seed).shuffle(order)
    train, held = sorted(order[: args.train]), sorted(order[args.train :])
    for folder, part in (("data", train), ("data-heldout", held)):
        t2i, i2t = rows(part, part)
        write(ROOT / "configs" / "rematch" / folder / "EmojiT2I.jsonl", t2i)
        write(ROOT / "configs" / "rematch" / folder / "EmojiI2T.jsonl", i2t)
    print(f"{len(train)} training and {len(held)} held-out emoji")


if __name__ == "__main__":
    main()
