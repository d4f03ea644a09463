"""ReMatch-style multi-token embeddings (METHODS.md §3.2): K learnable tokens appended to every input.

Each input is rendered with the Qwen chat template up to the assistant prefix; then K learnable vectors are
appended as *input embeddings* (not vocabulary tokens). The embedding is the mean of their last-layer hidden
states (then L2-normalised). Queries use the query bank ``L_q``, documents the document bank ``L_d`` (one bank
per side [I], or one shared bank with ``shared_bank=True``). Attention stays causal [I]: the K tokens see the
whole input and the tokens before them.

The banks are saved beside the HF weights as ``rematch_tokens.safetensors`` (keys ``query`` and ``document``,
or ``shared``), each ``(K, hidden)`` float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omniret.encoders import FAMILIES
from omniret.encoders.base import to_device
from omniret.encoders.hub import register_checkpoint
from omniret.encoders.mllm import (
    RUNTIME_OPTIONS,
    TEMPLATES,
    VISION_BLOCK,
    MLLMRecipe,
    QwenVLEncoder,
    family_options,
    instruction_for,
    load_family,
)
from omniret.encoders.options import declare_options
from omniret.encoders.pooling import pool
from omniret.errors import ConfigError, ModelNotFoundError
from omniret.types import ImagePart, Item

BANK_FILE = "rematch_tokens.safetensors"


@TEMPLATES.register("rematch", "Qwen chat template up to the assistant prefix; K learnable tokens follow")
def rematch_template(item: Item, is_query: bool, recipe: MLLMRecipe) -> str:
    """``system`` + user turn (``{instruction}\\n`` then parts in order) + ``<|im_start|>assistant\\n``."""
    inst = instruction_for(item, is_query, recipe)
    content = "".join(VISION_BLOCK if isinstance(p, ImagePart) else p for p in item.parts)
    if inst:
        content = f"{inst}\n{content}"
    return (f"<|im_start|>system\n{recipe.system_prompt}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
            f"<|im_start|>assistant\n")


class ReMatchEncoder(QwenVLEncoder):
    """Qwen2-VL / Qwen2.5-VL + learnable token banks; embedding = mean of the K tokens' final states."""

    family = "rematch"

    def __init__(self, path: str | Path, recipe: MLLMRecipe, *, init_tokens: bool = False, seed: int = 0,
                 **kw: Any) -> None:
        if recipe.num_tokens < 1:
            raise ConfigError(f"family 'rematch' needs num_tokens >= 1, got {recipe.num_tokens}")
        super().__init__(path, recipe, **kw)
        self.banks = self._load_banks(Path(path), init_tokens, seed)

    def _bank_names(self) -> tuple[str, ...]:
        return ("shared",) if self.recipe_.shared_bank else ("query", "document")

    def _load_banks(self, path: Path, init: bool, seed: int) -> torch.nn.ParameterDict:
        from safetensors.torch import load_file

        k, h = self.recipe_.num_tokens, self.dim
        file = path / BANK_FILE
        if file.is_file():
            raw = load_file(str(file))
            missing = [n for n in self._bank_names() if n not in raw]
            if missing:
                raise ConfigError(f"{file}: missing token bank(s) {missing}; has {sorted(raw)}")
            for n in self._bank_names():
                if tuple(raw[n].shape) != (k, h):
                    raise ConfigError(f"{file}: bank {n!r} has shape {tuple(raw[n].shape)}, expected ({k}, {h}) "
                                      f"(num_tokens={k}, hidden={h})")
        elif init:
            # [I] the authors' initialisation is unknown: random vectors with the scale of the embedding table
            g = torch.Generator().manual_seed(seed)
            std = float(self.backbone.get_input_embeddings().weight.detach().float().std())
            raw = {n: torch.randn(k, h, generator=g) * std for n in self._bank_names()}
        else:
            raise ModelNotFoundError(
                f"{path}: no {BANK_FILE} (the learnable-token banks). Load a directory saved by omniret, or pass "
                f"init_tokens=True to start fresh banks for training"
            )
        params = {n: torch.nn.Parameter(t.float().to(self.device)) for n, t in raw.items()}
        return torch.nn.ParameterDict(params)

    def bank(self, is_query: bool) -> torch.Tensor:
        """The ``(K, hidden)`` token bank used for queries (``is_query``) or documents."""
        if self.recipe_.shared_bank:
            return self.banks["shared"]
        return self.banks["query" if is_query else "document"]

    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        """Token embeddings with the K appended slots of every row replaced by the bank: ``(B, L, H)``."""
        emb = self.backbone.get_input_embeddings()(batch["input_ids"])
        bank = self.bank(batch["is_query"]).to(emb.dtype)
        # each row holds exactly K extra slots, contiguous and in order, so row-major boolean indexing lines up
        return emb.masked_scatter(batch["extra"].unsqueeze(-1), bank.repeat(emb.shape[0], 1))

    def token_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """The K learnable tokens' last-layer states of every row: ``(B, K, hidden)`` (``ME`` in the paper)."""
        return self._tokens(self.hidden_states(batch), batch)

    def _tokens(self, hidden: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        extra = batch["extra"].to(hidden.device)
        return hidden[extra].view(hidden.shape[0], self.recipe_.num_tokens, hidden.shape[-1])

    def embed_tokens(self, prepared: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E* (B, hidden), token states (B, K, hidden))`` float32 from one forward pass (E* = the recipe's
        pooling of the K states, i.e. what :meth:`embed` returns)."""
        batch = to_device(prepared, self.device)
        with self.autocast():
            hidden = self.hidden_states(batch)
            emb = pool(self.recipe_.pooling, hidden, self.pool_mask(batch).to(hidden.device))
            return emb.float(), self._tokens(hidden, batch).float()

    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "banks": self.banks}

    def param_roles(self) -> dict[str, list[str]]:
        roles = super().param_roles()
        return {**roles, "projector": roles["projector"] + ["banks.*"]}

    def save_files(self, out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        meta = super().save_files(out)
        save_file({n: p.detach().float().cpu().contiguous() for n, p in self.banks.items()}, str(out / BANK_FILE))
        return meta


REMATCH_DEFAULTS: dict[str, Any] = dict(template="rematch", pooling="mean", positions="mrope",
                                        padding_side="left", num_tokens=16, doc_instruction=True,
                                        max_length=2048)


#: ReMatch's options reach it through its recipe (MLLMRecipe: num_tokens, fusion, template, ...) plus the
#: runtime ones and the learnable tokens' initialisation (``init_tokens``, ``seed``)
REMATCH_RUNTIME = RUNTIME_OPTIONS | {"init_tokens", "seed"}


@FAMILIES.register("rematch", "ReMatch: chat template + K=16 learnable tokens, mean of their final states")
@declare_options(family_options(REMATCH_RUNTIME))
def load_rematch(path: Any, **options: Any) -> QwenVLEncoder:
    return load_family(ReMatchEncoder, path, REMATCH_DEFAULTS, options, REMATCH_RUNTIME)


register_checkpoint(
    "FireRedTeam/ReMatch-3B", "rematch",
    "Qwen2.5-VL-3B, chat template + 16 learnable tokens, mean-fused; needs rematch_tokens.safetensors",
)
