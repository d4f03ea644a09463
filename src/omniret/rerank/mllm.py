"""Zero-shot MLLM reranking by P(True) (MM-Embed, arXiv 2411.02571): the shared prefix is encoded once.

For one query and k candidates the sequences are ``chat_head + prefix(query) + suffix(candidate) + chat_tail``,
where the prefix is everything before ``{document}`` in the template (:mod:`omniret.rerank.templates`). The
score of a candidate is ``softmax(logits[[pos, neg]])[0]`` at the last position, ``pos``/``neg`` being the
first token of the template's answer words ("True"/"False", or "Yes"/"No"); for LLaVA-Next's and Qwen's
vocabularies each word is a single token.

Fast by construction: the prefix (system prompt, instruction, query text and images) runs through the model
once with ``use_cache=True``; its KV cache is repeated over a batch of candidate suffixes, which run in one
forward each, right-padded, with positions continuing the prefix (M-RoPE positions for Qwen come from HF's
``get_rope_index`` over the full sequence, so they equal the unshared computation). Only the last real
position of each row goes through the LM head. :meth:`MLLMReranker.score_naive` is the reference: one
unshared forward of HF's top-level model per (query, candidate) pair; both agree to 1e-4 (tests).

Prompt text is tokenised in two pieces (prefix, then suffix) in both paths, so their token sequences match
exactly; images inside either piece are expanded to one slot per visual feature as the encoders do.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniret.encoders.mllm import expand_image_tokens, merge_lora, resolve_adapter
from omniret.encoders.saved import read_saved_config
from omniret.errors import ConfigError, DataError
from omniret.registry import Registry
from omniret.rerank.base import ScoringReranker
from omniret.rerank.templates import RerankTemplate, resolve_template
from omniret.types import ImagePart, Item, Part

BACKENDS: Registry[type[MLLMReranker]] = Registry("reranker backbone (config model_type)")


@dataclass
class Vision:
    """Visual features of a list of images: HF's ``get_image_features`` output (``pooler_output`` = one
    ``(n_i, H)`` tensor per image), the slot count per image and the processor outputs for the HF forward."""

    out: Any = None
    counts: list[int] = field(default_factory=list)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


class MLLMReranker(ScoringReranker):
    """P(True) reranker over a HF image-text-to-text checkpoint; subclasses set the chat format and vision."""

    model_types: tuple[str, ...] = ()
    image_marker = "<image>\n"
    chat_format = "{content}"
    add_bos = False
    #: the image processor output that ``get_image_features`` takes beside the pixels (grids, sizes)
    size_key = "image_sizes"

    def __init__(self, path: str | Path, *, template: str | RerankTemplate | None = None,
                 templates: dict[str, str | RerankTemplate] | None = None, weight: float = 0.0,
                 batch_size: int = 16, device: str = "cpu", dtype: str = "float32", chat_format: str | None = None,
                 name: str | None = None, base_model: str | None = None) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"rerank weight must be in [0, 1], got {weight}")
        if batch_size < 1:
            raise ConfigError(f"rerank batch_size must be >= 1, got {batch_size}")
        torch_dtype = getattr(torch, str(dtype).replace("torch.", ""), None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"rerank dtype must name a torch dtype (float32, bfloat16, float16), got {dtype!r}")
        self.path = Path(path)
        weights, adapter = resolve_adapter(self.path, base_model) if self.path.is_dir() else (path, None)
        cfg = AutoConfig.from_pretrained(weights)
        if cfg.model_type not in self.model_types:
            raise ConfigError(f"{path}: model_type {cfg.model_type!r} is not one of {', '.join(self.model_types)}")
        model = AutoModelForImageTextToText.from_pretrained(weights, dtype=torch_dtype, attn_implementation="sdpa")
        if adapter is not None:
            model = merge_lora(model, adapter)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        files = self.path if (self.path / "tokenizer_config.json").is_file() else weights
        self.tokenizer = AutoTokenizer.from_pretrained(files)
        self.image_processor = AutoImageProcessor.from_pretrained(
            self.path if (self.path / "preprocessor_config.json").is_file() else weights, backend="pil")
        self.template = template
        self.templates = dict(templates or {})
        self.weight = weight
        self.batch_size = batch_size
        self.name = name or str(path)
        if chat_format is not None:
            if "{content}" not in chat_format:
                raise ConfigError(f"chat_format must contain {{content}}, got {chat_format!r}")
            self.chat_format = chat_format
        self.image_token_id = int(getattr(cfg, "image_token_id", None) or cfg.image_token_index)
        tok = self.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))

    # ------------------------------------------------------------------ backend hooks
    def vision(self, images: list[ImagePart]) -> Vision:
        """Features of ``images`` (one call for all of them): the image processor's pixels and its per-image size
        tensor (``size_key``) through HF's own ``get_image_features``, so a slot count always equals the feature
        count."""
        if not images:
            return Vision()
        feats = self.image_processor(images=[im.load() for im in images], return_tensors="pt")
        pix = feats["pixel_values"].to(self.device, self.model.dtype)
        sizes = feats[self.size_key].to(self.device)
        out = self.model.model.get_image_features(pix, sizes, return_dict=True)
        return Vision(out, [int(f.shape[0]) for f in out.pooler_output], {"pixel_values": pix, self.size_key: sizes})

    def positions(self, ids: torch.Tensor, mask: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        """Positions of right-padded full sequences ``(B, L)``: ``(B, L)`` or ``(3, B, L)``; ``grids[b]`` holds
        row ``b``'s image grids (Qwen) and is ignored by 1-D backends."""
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def naive_kwargs(self, ids: torch.Tensor, vis: Vision) -> dict[str, Any]:
        """Extra arguments of the HF top-level forward for one unshared sequence."""
        return {}

    # ------------------------------------------------------------------ text
    def _render(self, parts: Sequence[Part], head: bool, tail: bool) -> tuple[str, list[ImagePart]]:
        """Parts -> prompt text with one marker per image (+ the chat format's head/tail) and the images."""
        text = "".join(self.image_marker if isinstance(p, ImagePart) else p for p in parts)
        before, after = self.chat_format.split("{content}")
        return (before if head else "") + text + (after if tail else ""), [p for p in parts if isinstance(p, ImagePart)]

    def _ids(self, text: str, counts: list[int], bos: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n = ids.count(self.image_token_id)
        if n != len(counts):
            raise DataError(f"rerank prompt has {n} image placeholder(s) for {len(counts)} image(s) "
                            f"(an image token written literally in the text?)")
        head = [self.tokenizer.bos_token_id] if bos and self.add_bos and self.tokenizer.bos_token_id is not None else []
        return head + expand_image_tokens(ids, self.image_token_id, counts)

    def answer_ids(self, tpl: RerankTemplate) -> tuple[int, int]:
        """First token of each answer word (the whole word for real LLaVA-Next / Qwen vocabularies)."""
        ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in tpl.answers]
        if not all(ids) or ids[0][0] == ids[1][0]:
            raise ConfigError(f"answers {tpl.answers} do not start with two different tokens in this tokenizer")
        return ids[0][0], ids[1][0]

    def _prob(self, hidden: torch.Tensor, answers: tuple[int, int]) -> torch.Tensor:
        """``(B, H)`` last hidden states -> ``(B,)`` softmax probability of the positive answer; only the two
        answer rows of the LM head are applied (not the whole vocabulary)."""
        head = self.model.get_output_embeddings()
        rows = list(answers)
        bias = head.bias[rows] if getattr(head, "bias", None) is not None else None
        logits = torch.nn.functional.linear(hidden, head.weight[rows], bias).float()
        return torch.softmax(logits, dim=-1)[:, 0]

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, query: Item, documents: Sequence[Item], task: str | int | None = None) -> np.ndarray:
        """``(len(documents),)`` P(positive answer), the prefix's KV cache shared by all candidates."""
        tpl = resolve_template(self.template, task, self.templates)
        answers = self.answer_ids(tpl)
        prefix_parts, _ = tpl.render(query, None)
        text, images = self._render(prefix_parts, head=True, tail=False)
        pv = self.vision(images)
        p_ids = torch.tensor([self._ids(text, pv.counts, bos=True)], device=self.device)
        p_mask = torch.ones_like(p_ids)
        p_grids = [pv.inputs.get("image_grid_thw")]
        out = self._lm(p_ids, p_mask, self.positions(p_ids, p_mask, p_grids), pv, cache=None)
        scores: list[torch.Tensor] = []
        for s in range(0, len(documents), self.batch_size):
            scores.append(self._score_batch(query, tpl, documents[s : s + self.batch_size], p_ids, pv, out.cache,
                                            answers))
        return torch.cat(scores).cpu().numpy() if scores else np.zeros(0)

    def _score_batch(self, query: Item, tpl: RerankTemplate, docs: Sequence[Item], p_ids: torch.Tensor, pv: Vision,
                     cache: Any, answers: tuple[int, int]) -> torch.Tensor:
        rendered = [self._render(tpl.render(query, d)[1], head=False, tail=True) for d in docs]
        sv = self.vision([im for _, ims in rendered for im in ims])
        grid = sv.inputs.get("image_grid_thw")
        p_grid = pv.inputs.get("image_grid_thw")
        rows, grids, k = [], [], 0
        for text, ims in rendered:
            rows.append(self._ids(text, sv.counts[k : k + len(ims)], bos=False))
            parts = [g for g in (p_grid, None if grid is None else grid[k : k + len(ims)]) if g is not None]
            grids.append(torch.cat(parts) if parts else None)
            k += len(ims)
        b, lp, ls = len(rows), p_ids.shape[1], max(len(r) for r in rows)
        ids = torch.full((b, ls), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((b, ls), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, device=self.device)
            mask[i, : len(r)] = 1
        full_mask = torch.cat([torch.ones((b, lp), dtype=torch.long, device=self.device), mask], dim=1)
        pos = self.positions(torch.cat([p_ids.expand(b, -1), ids], dim=1), full_mask, grids)[..., lp:]
        shared = copy.deepcopy(cache)  # the suffix forward appends to the cache; keep the prefix's intact
        shared.batch_repeat_interleave(b)
        hidden = self._lm(ids, full_mask, pos, sv, cache=shared).last_hidden_state
        last = mask.sum(-1) - 1
        return self._prob(hidden[torch.arange(b, device=self.device), last], answers)

    def _lm(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, vis: Vision, cache: Any) -> Any:
        kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                                      use_cache=True)
        if vis.out is not None:
            kwargs["mm_encoder_outputs"] = {"image": vis.out}
        return self.model.model(**kwargs)

    @torch.no_grad()
    def score_naive(self, query: Item, documents: Sequence[Item], task: str | int | None = None) -> np.ndarray:
        """Reference: one full, unshared forward of HF's top-level model per (query, candidate) pair."""
        tpl = resolve_template(self.template, task, self.templates)
        answers = self.answer_ids(tpl)
        out = []
        for d in documents:
            prefix_parts, suffix_parts = tpl.render(query, d)
            p_text, p_imgs = self._render(prefix_parts, head=True, tail=False)
            s_text, s_imgs = self._render(suffix_parts, head=False, tail=True)
            vis = self.vision(p_imgs + s_imgs)
            n = len(p_imgs)
            ids = self._ids(p_text, vis.counts[:n], bos=True) + self._ids(s_text, vis.counts[n:], bos=False)
            t = torch.tensor([ids], device=self.device)
            kwargs = self.naive_kwargs(t, vis)
            if vis.out is not None:
                kwargs["mm_encoder_outputs"] = {"image": vis.out}
            # HF's own LM head over the whole vocabulary, as MM-Embed's reference snippet reads the logits
            logits = self.model(input_ids=t, logits_to_keep=1, **kwargs).logits[:, -1].float()
            out.append(torch.softmax(logits[:, list(answers)], dim=-1)[:, 0])
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def load_reranker(name_or_path: str | Path, **options: Any) -> MLLMReranker:
    """A reranker from a local HF-layout directory (or hub name, with a network), picked by its
    ``config.json`` ``model_type``. A directory saved by omniret's ReMatch recipe scores P(Yes) by default."""
    from transformers import AutoConfig

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        weights, _ = resolve_adapter(path, options.get("base_model"))
        if read_saved_config(path).get("family") == "rematch":
            options = {"template": "yesno", **options}
    else:
        weights = name_or_path
    try:
        model_type = AutoConfig.from_pretrained(weights).model_type
    except OSError as e:
        raise ConfigError(f"rerank model {name_or_path}: not a model directory or reachable name ({e})") from None
    from omniret.rerank import backends  # noqa: F401  (registers the backbones)

    if model_type not in BACKENDS:
        raise ConfigError(f"rerank model {name_or_path}: model_type {model_type!r} is not a supported reranker "
                          f"backbone; supported: {', '.join(BACKENDS.names())}")
    return BACKENDS.get(model_type)(path if path.is_dir() else name_or_path, **options)


__all__ = ["MLLMReranker", "BACKENDS", "Vision", "load_reranker"]
