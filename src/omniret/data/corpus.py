"""Corpus ingestion for indexing: a folder of images/texts, an M-BEIR-style candidate JSONL, or Items.

Folder rules (recursive, deterministic order by relative path, hidden files and directories skipped):

* an image (:data:`omniret.images.IMAGE_EXTENSIONS`) is an image document;
* an image with a same-named ``.txt`` sidecar (``cat.jpg`` + ``cat.txt``) is ONE image+text document;
* any other ``.txt`` or ``.md`` file is a text document (empty ones are skipped);
* files matching ``exclude`` glob patterns are skipped;
* ids are the relative paths (POSIX separators); every item carries ``metadata["source"]`` (the folder)
  and ``metadata["path"]``.

Incremental indexing compares each item's content fingerprint with what the index stored for the same id.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniret.data.mbeir import iter_pool
from omniret.errors import DataError
from omniret.images import IMAGE_EXTENSIONS
from omniret.index.base import Record
from omniret.types import Item

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = frozenset({".txt", ".md"})


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk(root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Every non-hidden, non-excluded file under ``root``, sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    rels = sorted((p.relative_to(root).as_posix(), p) for p in out)
    return [p for rel, p in rels if not _excluded(rel, exclude)]


def load_folder(root: str | os.PathLike, exclude: Sequence[str] = ()) -> list[Item]:
    """The documents of a folder as :class:`Item` s (see the module docstring for the rules).

    ``exclude``: glob patterns matched against each file's relative path and its name (``"LICENSE*"``,
    ``"drafts/*"``); excluded files are neither documents nor sidecars.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{root}: no such folder")
    base = base.resolve()
    files = _walk(base, exclude)
    present = set(files)
    sidecars = {
        p.with_suffix(".txt")
        for p in files
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".txt") in present
    }
    items = []
    for p in files:
        rel = p.relative_to(base).as_posix()
        meta = {"source": str(base), "path": rel}
        suffix = p.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            side = p.with_suffix(".txt")
            text = _read_text(side) or None if side in present else None
            if text is not None:
                meta["sidecar"] = side.relative_to(base).as_posix()
            items.append(Item(text, image=str(p), id=rel, metadata=meta))
        elif suffix in TEXT_EXTENSIONS and p not in sidecars:
            text = _read_text(p)
            if not text:
                log.warning("skipping empty text document %s", p)
                continue
            items.append(Item(text, id=rel, metadata=meta))
    return items


def load_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[Item]:
    """Items from an M-BEIR-style candidate JSONL (``did``, ``txt``, ``img_path``, ``modality``).

    Records are read and converted exactly as evaluation reads a pool (:func:`omniret.data.mbeir.iter_pool`,
    :meth:`~omniret.data.mbeir.MBeirRecord.to_item`: UniIR's text formatting), so an index built from a pool
    file holds the same vectors the benchmark scores. ``img_path`` is relative to ``image_root`` (default: the
    JSONL's directory). Malformed JSON, a missing field, a modality naming a part the record lacks, a missing
    image or a repeated ``did`` is a :class:`DataError` naming ``file:line``.
    """
    src = Path(path).expanduser().resolve()
    root = Path(image_root).expanduser().resolve() if image_root is not None else src.parent
    items = []
    for n, obj, rec in iter_pool(src):
        if rec.img_path is not None and not (root / rec.img_path).is_file():
            raise DataError(f"{src}:{n}: image not found: {root / rec.img_path}")
        meta = {"source": str(src), "line": n}
        if "src_content" in obj:
            meta["src_content"] = obj["src_content"]
        items.append(rec.to_item(root, metadata=meta))
    return items


def load_corpus(
    source: str | os.PathLike | Iterable[Item], exclude: Sequence[str] = ()
) -> tuple[list[Item], str | None]:
    """Items from a folder (minus ``exclude`` globs), a ``.jsonl`` file or an iterable of Items, plus the
    source key that scopes deletions during incremental indexing (``None`` for an iterable: nothing is
    ever deleted)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if p.is_dir():
            return load_folder(p, exclude), str(p.resolve())
        if p.is_file() and p.suffix.lower() == ".jsonl":
            return load_jsonl(p), str(p.resolve())
        if p.is_file():
            raise DataError(f"{source}: expected a folder or a .jsonl file")
        raise DataError(f"{source}: no such folder or file")
    items = list(source)
    for i, it in enumerate(items):
        if not isinstance(it, Item):
            raise DataError(f"corpus item {i} is a {type(it).__name__}, expected omniret.Item")
        if not it.id:
            raise DataError(f"corpus item {i} has no id; give every Item an id to index it")
    return items, None


@dataclass
class UpdatePlan:
    """What incremental indexing must do: encode ``to_encode``, then delete ``removed`` ids."""

    to_encode: list[Item] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)


def plan_update(items: list[Item], stored: Iterable[Record], source: str | None) -> UpdatePlan:
    """Compare ``items`` with the index's ``stored`` records by id and content fingerprint.

    Records from the same ``source`` whose id no longer appears are scheduled for removal; records from
    other sources are left alone. Duplicate ids among ``items`` are a :class:`DataError`.
    """
    prints = {r.id: (r.fingerprint, r.metadata.get("source")) for r in stored}
    plan, seen = UpdatePlan(), set()
    for it in items:
        if it.id in seen:
            raise DataError(f"duplicate id {it.id!r} in the corpus")
        seen.add(it.id)
        old = prints.get(it.id)
        if old is None:
            plan.added += 1
            plan.to_encode.append(it)
        elif old[0] != it.fingerprint():
            plan.updated += 1
            plan.to_encode.append(it)
        else:
            plan.unchanged += 1
    if source is not None:
        plan.removed = [i for i, (_, src) in prints.items() if src == source and i not in seen]
    return plan
