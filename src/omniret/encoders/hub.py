"""Known published checkpoints: resolve a registered repo id to a local directory, never silently download.

Lookup order for ``resolve_checkpoint("org/name")``:

1. ``$OMNIRET_MODELS_DIR/org/name`` (or ``org--name``) when that variable is set;
2. the local Hugging Face cache (``snapshot_download(..., local_files_only=True)``);
3. a download through ``huggingface_hub`` — only when ``download=True`` *and* ``HF_HUB_OFFLINE`` is unset.

Anything else is a :class:`~omniret.errors.ModelNotFoundError` naming the repo id and where to put the files.

``register_checkpoint`` adds a name to ``ENCODERS`` with its family and recipe overrides and records a one-line
summary that ``omniret models`` prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omniret.errors import ModelNotFoundError

MODELS_DIR_ENV = "OMNIRET_MODELS_DIR"


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint omniret knows: its repo id, family and the recipe options it needs."""

    repo_id: str
    family: str
    summary: str
    options: dict[str, Any] = field(default_factory=dict)


CHECKPOINTS: dict[str, Checkpoint] = {}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _models_dir_candidates(repo_id: str) -> list[Path]:
    root = os.environ.get(MODELS_DIR_ENV)
    if not root:
        return []
    base = Path(root).expanduser()
    return [base / repo_id, base / repo_id.replace("/", "--")]


def _hf_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss (not cached, partial, bad cache) means "not local"
        return None


def not_found_message(repo_id: str, family: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return (
        f"{repo_id}: weights not found locally and no download was possible "
        f"({'HF_HUB_OFFLINE is set' if _offline() else 'download failed or disabled'}). Put the checkpoint in "
        f"the Hugging Face cache ({HF_HUB_CACHE}, e.g. `huggingface-cli download {repo_id}` on a machine with "
        f"network access), or copy its files to ${MODELS_DIR_ENV}/{repo_id}, or load a local copy with "
        f"load_encoder('/path/to/dir', family='{family}')"
    )


def resolve_checkpoint(repo_id: str, family: str = "?", download: bool = True) -> Path:
    """A local directory holding ``repo_id``'s files, or :class:`ModelNotFoundError`."""
    for cand in _models_dir_candidates(repo_id):
        if (cand / "config.json").is_file():
            return cand
    cached = _hf_cache(repo_id)
    if cached is not None:
        return cached
    if download and not _offline():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id))
        except Exception as e:  # noqa: BLE001 - network errors come in many classes
            raise ModelNotFoundError(not_found_message(repo_id, family) + f" [{type(e).__name__}]") from e
    raise ModelNotFoundError(not_found_message(repo_id, family))


def register_checkpoint(repo_id: str, family: str, summary: str, **options: Any) -> None:
    """Register ``repo_id`` in ``ENCODERS``: ``load_encoder(repo_id)`` resolves it locally and loads it
    with family ``family`` and the recipe ``options`` (user options override them)."""
    from omniret.encoders import ENCODERS, FAMILIES

    CHECKPOINTS[repo_id] = Checkpoint(repo_id, family, summary, dict(options))

    def factory(**user: Any) -> Any:
        download = user.pop("download", True)
        path = resolve_checkpoint(repo_id, family, download=download)
        merged = {**options, **user}
        merged.setdefault("name", repo_id)
        return FAMILIES.get(family)(path, **merged)

    ENCODERS.add(repo_id, factory, f"{family}: {summary}")


__all__ = ["CHECKPOINTS", "Checkpoint", "MODELS_DIR_ENV", "register_checkpoint", "resolve_checkpoint"]
