"""Reader for MMEB (VLM2Vec) eval and train rows.

Eval rows (one query and its own candidate list, the target first) come in two shapes:

* v2 / ``MMEB_Test_Instruct``: ``qry_inst``, ``qry_text``, ``qry_img_path``, ``tgt_inst``, ``tgt_text[]``,
  ``tgt_img_path[]`` — instructions separate, so they go to ``Item.instruction`` and each encoder family
  applies its own template;
* v1 / ``MMEB-eval``: ``qry_text`` already holds the instruction; no ``qry_inst``/``tgt_inst``.

Train rows (``MMEB-train``): ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path`` and optional
``neg_text``, ``neg_image_path``.

Image placeholders such as ``<|image_1|>`` are removed from the text: an :class:`Item` carries its image
as a separate part. As in VLM2Vec's eval code (``src/data/eval_dataset/image_*``), the target instruction
applies only to candidates with an image; text candidates (class labels, answers, captions) are their raw
text. Eval Items carry, in ``Item.metadata``, the facts a family's MMEB formatting may depend on:
``mmeb_dataset``, ``mmeb_role`` (``query``/``candidate``) and, on candidates, ``mmeb_query_modality``
(VLM2Vec's newline rules, :func:`omniret.encoders.families.qwen2vl.mmeb_eval_suffix`). Image paths are
relative to ``image_root``. A data set is a ``<name>.jsonl`` or ``<name>.parquet`` file, or a ``<name>/``
directory of them; the name keys MMEB's meta-task tables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omniret.data.jsonl import field, iter_jsonl
from omniret.errors import DataError
from omniret.types import Item

_PLACEHOLDER = re.compile(r"<\|image_\d+\|>")


def strip_placeholder(text: str | None) -> str | None:
    """Remove ``<|image_N|>`` tokens and surrounding whitespace; ``None`` when nothing is left."""
    if text is None:
        return None
    out = _PLACEHOLDER.sub("", text).strip()
    return out or None


@dataclass
class MMEBEvalRow:
    """One eval query and its candidates; ``candidates[0]`` is the target (VLM2Vec's ground truth)."""

    query: Item
    candidates: list[Item]


@dataclass
class MMEBTrainRow:
    query: Item
    pos: Item
    neg: Item | None = None


def _item(text: str | None, img: str | None, inst: str | None, image_root: Path, where: str,
          metadata: dict[str, Any] | None = None) -> Item:
    """The one MMEB row part -> Item conversion (placeholder stripped, image path joined to the root)."""
    text = strip_placeholder(text)
    path = str(image_root / img) if img else None
    if text is None and path is None:
        raise DataError(f"{where}: empty query/candidate (no text and no image)")
    # v2 instructions carry the placeholder too ("<|image_1|>\nRepresent the given image ...")
    return Item(text, image=path, instruction=strip_placeholder(inst), metadata=metadata)


def _iter_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", row)`` from a JSONL or parquet file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"{path}:row {i}", row
    else:
        for n, row in iter_jsonl(path):
            yield f"{path}:{n}", row


def _as_list(row: dict, key: str, where: str) -> list[str | None]:
    val = row.get(key)
    if val is None:
        return []
    if isinstance(val, str):
        return [val]
    if not isinstance(val, list) or not all(v is None or isinstance(v, str) for v in val):
        raise DataError(f"{where}: field {key!r} must be a list of strings")
    return list(val)


def parse_eval_row(row: dict[str, Any], image_root: Path, where: str, dataset: str = "") -> MMEBEvalRow:
    q_text = field(row, "qry_text", str, where, optional=True)
    q_img = field(row, "qry_img_path", str, where, optional=True)
    q_inst = field(row, "qry_inst", str, where, optional=True)
    t_inst = field(row, "tgt_inst", str, where, optional=True)
    texts, imgs = _as_list(row, "tgt_text", where), _as_list(row, "tgt_img_path", where)
    n = max(len(texts), len(imgs))
    if n == 0:
        raise DataError(f"{where}: no candidates (tgt_text and tgt_img_path are empty)")
    # VLM2Vec pads the shorter list with empty strings when candidates are single-modality
    texts += [None] * (n - len(texts))
    imgs += [None] * (n - len(imgs))
    query = _item(q_text, q_img or None, q_inst, image_root, where, {"mmeb_dataset": dataset, "mmeb_role": "query"})
    meta = {"mmeb_dataset": dataset, "mmeb_role": "candidate", "mmeb_query_modality": query.modality}
    cands = [
        _item(t, i or None, t_inst if i else None, image_root, f"{where} candidate {j}", meta)
        for j, (t, i) in enumerate(zip(texts, imgs, strict=True))
    ]
    return MMEBEvalRow(query, cands)


def parse_train_row(row: dict[str, Any], image_root: Path, where: str) -> MMEBTrainRow:
    q = _item(field(row, "qry", str, where, optional=True), row.get("qry_image_path") or None, None, image_root, where)
    pos = _item(row.get("pos_text"), row.get("pos_image_path") or None, None, image_root, f"{where} pos")
    neg = None
    if row.get("neg_text") or row.get("neg_image_path"):
        neg = _item(row.get("neg_text"), row.get("neg_image_path") or None, None, image_root, f"{where} neg")
    return MMEBTrainRow(q, pos, neg)


def dataset_files(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{dataset name: [files]}`` for ``<name>.jsonl|.parquet`` files and ``<name>/`` directories."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of MMEB data sets")
    out: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix in (".jsonl", ".parquet"):
            out[p.stem] = [p]
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".jsonl", ".parquet"))
            if files:
                out[p.name] = files
    if not out:
        raise DataError(f"{root}: no <dataset>.jsonl / .parquet files found")
    return out


def read_eval(files: list[Path], image_root: str | os.PathLike, dataset: str | None = None) -> list[MMEBEvalRow]:
    """Eval rows of one data set (``dataset``: its name, default the first file's stem or directory)."""
    if dataset is None and files:
        dataset = files[0].stem if len(files) == 1 else files[0].parent.name
    return [parse_eval_row(r, Path(image_root), w, dataset or "") for f in files for w, r in _iter_rows(f)]


def read_train(files: list[Path], image_root: str | os.PathLike) -> list[MMEBTrainRow]:
    return [parse_train_row(r, Path(image_root), w) for f in files for w, r in _iter_rows(f)]


def item_missing_images(item: Item) -> list[str]:
    """Paths of ``item``'s file images that do not exist."""
    return [p.path for p in item.images if p.path is not None and not os.path.isfile(p.path)]
