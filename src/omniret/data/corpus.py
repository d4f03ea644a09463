"""Corpus ingestion for indexing: a folder of images/texts, an M-BEIR-style candidate JSONL, or Items.

Folder rules (recursive, deterministic order by relative path, hidden files and directories skipped):

* an image (:data:`omniret.images.IMAGE_EXTENSIONS`) is an image document;
* an image with a same-named ``.txt`` sidecar (``cat.jpg`` + ``cat.txt``) is ONE image+text document;
* any other ``.txt`` or ``.md`` file is a text document (empty ones are skipped);
* files matching ``exclude`` glob patterns are skipped;
* ids are the relative paths (POSIX separators); every item carries ``metadata["source"]`` (the folder)
  and ``metadata["path"]``;
* unsafe or unreadable files (FIFOs, devices, symlinks leaving the folder, non-UTF-8 names, oversized files,
  non-UTF-8 text) are skipped and reported (:mod:`omniret.data.scan`).

Incremental indexing compares each item's content fingerprint with what the index stored for the same id.
Ids are scoped by source: when an id is already held by a document of ANOTHER source (two folders with the
same relative paths, a JSONL ``did`` equal to a folder path), the new document gets the id
``<source-name>~<hash>/<id>`` instead, so the two never overwrite each other.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniret.data.jsonl import iter_jsonl
from omniret.data.mbeir import pool_record
from omniret.data.scan import (
    MAX_IMAGE_BYTES,
    MAX_TEXT_BYTES,
    SkipReport,
    check_regular,
    display,
    read_capped,
    utf8_name,
    walk,
)
from omniret.errors import DataError
from omniret.images import IMAGE_EXTENSIONS
from omniret.index.base import Record, scoped_id
from omniret.types import Item

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = frozenset({".txt", ".md"})


def _read_text(path: Path) -> str:
    data = read_capped(path, MAX_TEXT_BYTES)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise DataError(f"{display(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _checked_root(root: str | os.PathLike) -> Path:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{display(root)}: no such folder")
    return base.resolve()


def load_folder(
    root: str | os.PathLike,
    exclude: Sequence[str] = (),
    *,
    follow_symlinks: bool = False,
    report: SkipReport | None = None,
) -> list[Item]:
    """The documents of a folder as :class:`Item` s (see the module docstring for the rules).

    ``exclude``: glob patterns matched against each file's relative path and its name (``"LICENSE*"``,
    ``"drafts/*"``); excluded files are neither documents nor sidecars. Unsafe or unreadable files go to
    ``report`` (see :mod:`omniret.data.scan`); without a report the first one raises :class:`DataError`.
    """
    report = report if report is not None else SkipReport(strict=True)
    base = _checked_root(root)
    files = [p for p in walk(base, report, follow_symlinks) if not _excluded(p.relative_to(base).as_posix(), exclude)]
    present = set(files)
    sidecars = {
        p.with_suffix(".txt")
        for p in files
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".txt") in present
    }
    items = []
    for p in files:
        rel = p.relative_to(base).as_posix()
        try:
            item = _folder_item(p, rel, base, present, sidecars)
        except DataError as e:
            report.skip(p, str(e).removeprefix(f"{display(p)}: "))
            continue
        if item is not None:
            items.append(item)
    return items


def _folder_item(p: Path, rel: str, base: Path, present: set[Path], sidecars: set[Path]) -> Item | None:
    """The document of file ``p`` (``None`` for a sidecar, an empty text or a non-document file)."""
    meta = {"source": str(base), "path": rel}
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        why = check_regular(p, MAX_IMAGE_BYTES)
        if why:
            raise DataError(f"{display(p)}: {why}")
        side = p.with_suffix(".txt")
        text = _read_text(side) or None if side in present else None
        if text is not None:
            meta["sidecar"] = side.relative_to(base).as_posix()
        return Item(text, image=str(p), id=rel, metadata=meta)
    if suffix in TEXT_EXTENSIONS and p not in sidecars:
        text = _read_text(p)
        if not text:
            log.warning("skipping empty text document %s", display(p))
            return None
        return Item(text, id=rel, metadata=meta)
    return None


def load_jsonl(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, *, report: SkipReport | None = None
) -> list[Item]:
    """Items from an M-BEIR-style candidate JSONL (``did``, ``txt``, ``img_path``, ``modality``).

    Records are read and converted exactly as evaluation reads a pool (:func:`omniret.data.mbeir.pool_record`,
    :meth:`~omniret.data.mbeir.MBeirRecord.to_item`: UniIR's text formatting), so an index built from a pool
    file holds the same vectors the benchmark scores. ``img_path`` is relative to ``image_root`` (default: the
    JSONL's directory) and must stay inside it. Malformed JSON, a missing field, a modality naming a part the
    record lacks, a missing or escaping image or a repeated ``did`` is a :class:`DataError` naming
    ``file:line`` — or, with a non-strict ``report``, that line is skipped and recorded.
    """
    report = report if report is not None else SkipReport(strict=True)
    src = Path(path).expanduser().resolve()
    root = Path(image_root).expanduser().resolve() if image_root is not None else src.parent
    items, seen = [], set()
    for n, obj in iter_jsonl(src, report.skip):
        try:
            item = _jsonl_item(obj, f"{src}:{n}", root, seen, {"source": str(src), "line": n})
        except DataError as e:
            report.skip(f"{src}:{n}", str(e).removeprefix(f"{src}:{n}: "))
            continue
        items.append(item)
    return items


def _jsonl_item(obj: dict, where: str, root: Path, seen: set[str], meta: dict) -> Item:
    rec = pool_record(obj, where)
    if rec.id in seen:
        raise DataError(f"{where}: duplicate did {rec.id!r}")
    if not all(utf8_name(s) for s in (rec.id, rec.txt or "", rec.img_path or "")):
        raise DataError(f"{where}: did, txt and img_path must be valid Unicode text")
    if rec.img_path is not None:
        img_file = (root / rec.img_path).resolve()
        if not str(img_file).startswith(str(root).rstrip(os.sep) + os.sep):
            raise DataError(f"{where}: img_path {rec.img_path!r} leads outside the image root {root}")
        if not img_file.exists():
            raise DataError(f"{where}: image not found: {root / rec.img_path}")
        why = check_regular(img_file, MAX_IMAGE_BYTES)
        if why:
            raise DataError(f"{where}: image {img_file}: {why}")
    seen.add(rec.id)
    if "src_content" in obj:
        meta["src_content"] = obj["src_content"]
    return rec.to_item(root, metadata=meta)


def load_corpus(
    source: str | os.PathLike | Iterable[Item],
    exclude: Sequence[str] = (),
    *,
    follow_symlinks: bool = False,
    report: SkipReport | None = None,
) -> tuple[list[Item], str | None]:
    """Items from a folder (minus ``exclude`` globs), a ``.jsonl`` file or an iterable of Items, plus the
    source key that scopes ids and deletions during incremental indexing (``None`` for an iterable: nothing
    is ever deleted). Bad inputs go to ``report`` (default: the first one raises)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if p.is_dir():
            return load_folder(p, exclude, follow_symlinks=follow_symlinks, report=report), str(p.resolve())
        if p.is_file() and p.suffix.lower() == ".jsonl":
            return load_jsonl(p, report=report), str(p.resolve())
        if p.exists():
            raise DataError(f"{display(source)}: expected a folder or a .jsonl file")
        raise DataError(f"{display(source)}: no such folder or file")
    if isinstance(source, (str, bytes, Item)):
        raise DataError(f"corpus must be a folder, a .jsonl path or a list of Items, got {type(source).__name__}")
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
    #: documents of this source in the index before the run
    source_total: int = 0


def plan_update(
    items: list[Item], stored: Iterable[Record], source: str | None, keep: Iterable[str] = ()
) -> UpdatePlan:
    """Compare ``items`` with the index's ``stored`` records by id and content fingerprint.

    With a ``source``, an item whose id another source already holds is re-keyed with :func:`scoped_id`;
    records of the same ``source`` whose id no longer appears (and is not in ``keep``: files skipped this
    run) are scheduled for removal; records of other sources are left alone. Duplicate ids among ``items``
    are a :class:`DataError`.
    """
    prints = {r.id: (r.fingerprint, r.metadata.get("source")) for r in stored}
    plan, seen = UpdatePlan(), set()
    for it in items:
        if source is not None and it.id in prints and prints[it.id][1] != source:
            it = Item(parts=it.parts, instruction=it.instruction, id=scoped_id(source, it.id), metadata=it.metadata)
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
        kept = set(keep)
        plan.removed = [i for i, (_, src) in prints.items() if src == source and i not in seen and i not in kept]
        plan.source_total = sum(1 for _, src in prints.values() if src == source)
    return plan
