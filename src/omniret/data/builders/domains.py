"""A training mixture of real image/caption domains, one M-BEIR root per domain, for leave-one-domain-out runs.

Each domain is a stream of ``(concept key, caption, image)`` from a package that installs here:

* ``noto`` — Noto Color Emoji (Debian ``fonts-noto-color-emoji``, SIL OFL 1.1), Unicode names;
* ``twemoji`` — Twitter's Twemoji design (npm ``emoji-datasource-twitter``: 64 px PNGs, graphics CC-BY 4.0,
  package MIT), the same Unicode names, so *style* differs while the concepts are shared;
* ``clipart`` — Openclipart (Debian ``openclipart-png``, public domain), caption = the drawing's title
  from its file name;
* ``openmoji`` — OpenMoji (npm ``openmoji``: colour SVGs, CC-BY-SA 4.0, rendered with resvg), a flat outlined
  design unlike both others, the same Unicode names.

Splits are by a seeded hash of the **concept key** (the code point for emoji), so an emoji concept that is
test in one design is test in every design: a leave-one-domain-out model never trains on a test concept in
another style. Every domain gets two tasks in UniIR's numbering — ``task0`` caption → image and ``task3``
image → caption — with local pools and a union pool of images and captions (where modality bias shows),
and several instructions per task. Nothing here is committed: domains are built into a cache directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from omniret.data.builders.emoji_bench import write_caption_split
from omniret.errors import DataError
from omniret.io import atomic_write_json

Sample = tuple[str, str, Image.Image]  # (concept key, caption, RGB image)

INSTRUCTIONS = {
    ("text", "image"): ["Find the picture that matches this name.", "Retrieve the image described by this caption.",
                        "Which drawing shows this?", "Find an image of the following."],
    ("image", "text"): ["Find the name of what this picture shows.", "Retrieve a short caption for this image.",
                        "What is depicted here? Retrieve its name.", "Find the text that describes this image."],
}


def _on_white(img: Image.Image, size: int) -> Image.Image:
    """RGBA/any -> RGB on white, fitted into a ``size`` square (aspect kept), so every domain looks alike."""
    img = img.convert("RGBA")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(img, ((size - img.width) // 2, (size - img.height) // 2), mask=img.getchannel("A"))
    return out


def noto(cache: Path | None, size: int) -> Iterator[Sample]:
    from omniret.data.builders.emoji import iter_emoji

    for cp, name, img in iter_emoji(cache, size=size):
        yield f"emoji:{cp:x}", name, img


def twemoji(cache: Path | None, size: int) -> Iterator[Sample]:
    from omniret.data.builders.npm import fetch_npm

    pkg = fetch_npm("emoji-datasource-twitter", "16.0.0", cache)
    for e in json.loads((pkg / "emoji.json").read_text(encoding="utf-8")):
        if "-" in e["unified"] or not e.get("has_img_twitter"):
            continue  # sequences (flags, ZWJ, skin tones) have no single Unicode name
        cp = int(e["unified"], 16)
        name = unicodedata.name(chr(cp), None)
        file = pkg / "img" / "twitter" / "64" / e["image"]
        if name is None or cp < 0x80 or not file.is_file():
            continue
        yield f"emoji:{cp:x}", name.lower(), _on_white(Image.open(file), size)


def openmoji(cache: Path | None, size: int) -> Iterator[Sample]:
    try:
        import resvg_py
    except ImportError as e:
        raise DataError("the openmoji domain renders SVGs with resvg: pip install 'omniret[data]'") from e
    from omniret.data.builders.npm import fetch_npm

    pkg = fetch_npm("openmoji", "17.0.0", cache)
    for file in sorted((pkg / "color" / "svg").glob("*.svg")):
        try:
            cp = int(file.stem, 16)  # sequences (flags, ZWJ, skin tones: "1F468-200D-...") do not parse
        except ValueError:
            continue
        name = unicodedata.name(chr(cp), None)  # OpenMoji's own extras sit in the private use area: no name
        if name is None or cp < 0x80:
            continue
        png = resvg_py.svg_to_bytes(svg_path=str(file), width=2 * size, height=2 * size)
        yield f"emoji:{cp:x}", name.lower(), _on_white(Image.open(io.BytesIO(png)), size)


def clipart(cache: Path | None, size: int) -> Iterator[Sample]:
    from omniret.data.builders.debian import fetch_deb

    root = fetch_deb("openclipart-png", cache) / "usr" / "share" / "openclipart" / "png"
    for file in sorted(root.rglob("*.png")):
        title = re.sub(r"[_\-]+", " ", re.sub(r"\d+", " ", file.stem)).strip().lower()
        title = re.sub(r"\s+", " ", title)
        if len(title) < 3:
            continue  # numbered files without a title say nothing
        try:
            img = _on_white(Image.open(file), size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # a few files in the archive are undecodable or huge (>178 Mpx) posters
        yield f"clip:{file.relative_to(root)}", title, img


DOMAINS: dict[str, tuple[int, Callable[[Path | None, int], Iterator[Sample]]]] = {
    "noto": (10, noto), "twemoji": (11, twemoji), "clipart": (12, clipart), "openmoji": (13, openmoji),
}


def is_test(key: str, seed: int, test_fraction: float) -> bool:
    h = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < test_fraction


def build_domain(
    name: str, out_dir: str | Path, cache: Path | None = None, size: int = 96, test_fraction: float = 0.3,
    seed: int = 0, limit: int | None = None,
) -> dict:
    """Write domain ``name`` in the M-BEIR layout into ``out_dir``; returns its manifest."""
    if name not in DOMAINS:
        raise DataError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ds, source = DOMAINS[name]
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[tuple[int, str, str]]] = {"train": [], "test": []}
    for n, (key, caption, img) in enumerate(source(cache, size), 1):
        if limit is not None and n > limit:
            break
        rel = f"images/{name}_{n:05d}.png"
        img.save(root / rel)
        splits["test" if is_test(key, seed, test_fraction) else "train"].append((n, caption, rel))
    if not splits["train"] or not splits["test"]:
        raise DataError(f"domain {name}: a split is empty (train {len(splits['train'])}, test {len(splits['test'])})")
    for split, rows in splits.items():
        write_caption_split(root, name, ds, split, rows)
    lines = ["query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4"]
    lines += ["\t".join([qm, cm, name, str(ds), *p]) for (qm, cm), p in INSTRUCTIONS.items()]
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    (root / "instructions" / "query_instructions.tsv").write_text("\n".join(lines) + "\n")
    manifest = {"name": name, "layout": "mbeir", "dataset_id": ds, "seed": seed, "test_fraction": test_fraction,
                "image_size": size, "train": len(splits["train"]), "test": len(splits["test"])}
    atomic_write_json(root / "manifest.json", manifest)  # last and atomic: a complete build has it
    return manifest
