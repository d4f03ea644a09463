"""MiniLM's tokeniser and the ``[CLS] (instruction [SEP])? text [SEP]`` batch layout, without transformers.

Built from the packaged ``tokenizer.json`` with the Rust ``tokenizers`` library only, so a process that runs
MiniLM through ONNX Runtime never imports transformers (about 3 s of a CLI search's cold start). The
PyTorch tower (:class:`omniret.encoders.minilm.MiniLMTextTower`) uses the same class, so both runtimes see
identical token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from omniret.errors import ModelNotFoundError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: instructions are short task descriptions; cap them so they never crowd out the text
MAX_INSTRUCTION_TOKENS = 64


@dataclass
class TextBatch:
    """Token tensors for one batch, all ``(B, L)`` with ``L`` the longest sequence in the batch.

    ``pool_mask`` is ``attention_mask`` with instruction positions zeroed.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor


class MiniLMTokenizer:
    """A BERT WordPiece ``tokenizers.Tokenizer`` plus the special ids; truncation and padding are done here."""

    def __init__(self, tok: Tokenizer, cls_id: int, sep_id: int, pad_id: int, max_length: int) -> None:
        # the raw tokenizer, without any fixed padding/truncation stored with it: we truncate and pad
        # ourselves (to the batch maximum only)
        self._tok = tok
        self._tok.no_truncation()
        self._tok.no_padding()
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.max_length = max_length

    @classmethod
    def from_dir(cls, path: Path, max_length: int) -> MiniLMTokenizer:
        """From ``path/tokenizer.json`` alone (no transformers import)."""
        from tokenizers import Tokenizer

        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFoundError(f"{path}: no tokenizer.json for the MiniLM text model")
        tok = Tokenizer.from_file(str(file))
        ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
        if None in ids.values():
            raise ModelNotFoundError(f"{file}: missing one of the special tokens [CLS], [SEP], [PAD]")
        return cls(tok, ids["[CLS]"], ids["[SEP]"], ids["[PAD]"], max_length)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """WordPiece ids of each text, without special tokens or truncation."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def length(self, text: str) -> int:
        """Tokens ``text`` takes as a plain sequence (with ``[CLS]``/``[SEP]``, after truncation)."""
        return min(len(self._tok.encode(text, add_special_tokens=False).ids) + 2, self.max_length)

    def tokenize(self, texts: Sequence[str], instructions: Sequence[str | None] | None = None) -> TextBatch:
        """Build ``[CLS] (instruction [SEP])? text [SEP]`` rows, padded to the batch maximum."""
        text_ids = self.ids(texts)
        instructions = list(instructions) if instructions is not None else [None] * len(text_ids)
        if len(instructions) != len(text_ids):
            raise ValueError(f"{len(instructions)} instructions for {len(text_ids)} texts")
        uniq = sorted({i for i in instructions if i})
        inst_ids = dict(zip(uniq, self.ids(uniq), strict=True)) if uniq else {}
        rows: list[list[int]] = []
        prefix_lens: list[int] = []
        for ids, inst in zip(text_ids, instructions, strict=True):
            prefix = inst_ids[inst][:MAX_INSTRUCTION_TOKENS] + [self.sep_id] if inst else []
            body = ids[: self.max_length - 2 - len(prefix)]
            rows.append([self.cls_id, *prefix, *body, self.sep_id])
            prefix_lens.append(len(prefix))
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention[i, : len(r)] = 1
        pool = attention.clone()
        for i, n in enumerate(prefix_lens):
            pool[i, 1 : 1 + n] = 0  # the instruction and its [SEP]; [CLS] stays, as in the plain case
        return TextBatch(input_ids, attention, pool)
