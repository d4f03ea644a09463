"""MM-Embed family: LLaVA-Next vision tower + projector, NV-Embed bidirectional Mistral, latent-attention pooling.

Recipe (METHODS.md §2.1-2.2; [P] = as in the released ``modeling_nvmmembed.py``, [I] = omniret's choice):

* query ``"Instruct: {inst}\\nQuery: <image>\\n{text}"``; no image -> ``"<image>\\n"`` dropped; no instruction
  -> ``"Query: <image>\\n{text}"``; documents ``"<image>\\n{text}"`` [P]. Interleaved parts render every
  image as ``"<image>\\n"`` in place and join texts with a space [I].
* tokens: BOS + prompt (+ EOS when ``add_eos``), right padding, truncation to ``max_length`` [P; ``add_eos``
  default True is [U] per METHODS]. Each ``<image>`` becomes ``(S/P)**2`` projected patch features of the
  global ``S x S`` view plus LLaVA-Next's ``image_newline`` (``global_image_patch_only``) [P].
* the language model attends bidirectionally (``is_causal=False`` in the config and every attention module,
  plain padding mask) [P]; positions count real tokens only, so left padding gives the same result [I].
* pooling: latent attention, then the mean over the attention mask with the first ``instruction_length``
  real tokens zeroed, where ``instruction_length = len(tokenizer(BOS + "Instruct: {inst}" (+ EOS)))`` exactly
  as the reference counts it [P]; the base class L2-normalises.

Weights load from an omniret-saved directory or from the released checkpoint layout (see
:mod:`omniret.encoders.families.mmembed_checkpoint`) without ``trust_remote_code``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from omniret.encoders import FAMILIES
from omniret.encoders.base import Encoder
from omniret.encoders.families.latent_attention import LatentAttentionPooler
from omniret.encoders.options import declare_options
from omniret.encoders.saved import read_saved_config, save_parts
from omniret.errors import DataError, OmniretError
from omniret.types import ImagePart, Item

FAMILY = "mmembed"
LATENT_FILE = "latent_attention.safetensors"


@dataclass(frozen=True)
class MMEmbedRecipe:
    """Everything besides the weights that changes MM-Embed embeddings."""

    query_prefix: str = "Query: "
    instruction_template: str = "Instruct: {instruction}"
    image_token: str = "<image>"
    max_length: int = 512
    add_bos: bool = True
    add_eos: bool = True
    padding_side: str = "right"
    mask_instruction: bool = True

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise OmniretError(f"mmembed: padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.max_length < 8:
            raise OmniretError(f"mmembed: max_length must be >= 8, got {self.max_length}")


def render_parts(item: Item, image_token: str = "<image>") -> str:
    """The item's parts as template text: an image is ``"<image>\\n"``; adjacent texts join with a space."""
    out = ""
    for part in item.parts:
        if isinstance(part, ImagePart):
            out += ("\n" if out and not out.endswith("\n") else "") + image_token + "\n"
        else:
            out += (" " if out and not out.endswith("\n") else "") + part
    return out


def format_prompt(item: Item, is_query: bool, recipe: MMEmbedRecipe) -> tuple[str, str | None]:
    """``(prompt, instruction_prefix)``; the prefix (``"Instruct: ..."``) is what the pool mask excludes."""
    body = render_parts(item, recipe.image_token)
    if not is_query:
        return body, None
    if item.instruction:
        prefix = recipe.instruction_template.format(instruction=item.instruction)
        return f"{prefix}\n{recipe.query_prefix}{body}", prefix
    return recipe.query_prefix + body, None


class MMEmbedEncoder(Encoder):
    """MM-Embed bi-encoder over HF ``LlavaNextModel`` (Mistral language model) + :class:`LatentAttentionPooler`."""

    family = FAMILY

    def __init__(
        self,
        model: Any,
        pooler: LatentAttentionPooler,
        tokenizer: Any,
        image_processor: Any,
        recipe: MMEmbedRecipe | None = None,
        *,
        name: str = "mmembed",
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.set_runtime(device, precision)
        self.recipe_ = recipe or MMEmbedRecipe()
        self.name = name
        make_bidirectional(model)
        self.model = model.to(self.device).eval()
        self.pooler = pooler.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        cfg = model.config
        self.dim = cfg.text_config.hidden_size
        self.image_token_id = int(cfg.image_token_index)
        tok_id = tokenizer.convert_tokens_to_ids(self.recipe_.image_token)
        if tok_id != self.image_token_id:
            raise OmniretError(
                f"mmembed: tokenizer maps {self.recipe_.image_token!r} to {tok_id}, config says {self.image_token_id}"
            )
        if self.recipe_.add_bos and tokenizer.bos_token_id is None:
            raise OmniretError("mmembed: recipe adds BOS but the tokenizer has no bos_token")
        if self.recipe_.add_eos and tokenizer.eos_token_id is None:
            raise OmniretError("mmembed: recipe adds EOS but the tokenizer has no eos_token")
        vc = cfg.vision_config
        self.image_size = int(vc.image_size)
        # global view only: (S/P)^2 patch features (+ CLS for "full") + one image_newline
        full = cfg.vision_feature_select_strategy == "full"
        self.tokens_per_image = (vc.image_size // vc.patch_size) ** 2 + int(full) + 1
        self.image_length = self.tokens_per_image

    # ----------------------------------------------------------------- recipe
    def recipe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": FAMILY,
            "dim": self.dim,
            **asdict(self.recipe_),
            "image_view": "global",
            "tokens_per_image": self.tokens_per_image,
            "pooling": "latent_attention+mean_without_instruction",
            "latent_attention": self.pooler.cfg.to_dict(),
        }

    # ----------------------------------------------------------------- training contract
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "pooler": self.pooler}

    def param_roles(self) -> dict[str, list[str]]:
        # METHODS.md §2.4: projector + LoRA on the LLM trained, vision tower frozen; the latent-attention
        # pooler is part of the embedding head and trains with the projector [I]
        return {"vision": ["model.vision_tower.*"],
                "projector": ["model.multi_modal_projector.*", "model.image_newline", "pooler.*"], "unused": []}

    def lora_scope(self) -> tuple[str, list[str]]:
        # MM-Embed's LoRA targets are unknown (METHODS.md §2.4 [U]); NV-Embed-v1 adapts every Mistral
        # attention and MLP projection [I]
        return "model.language_model", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    # ----------------------------------------------------------------- CPU side
    def _tokenize(self, prompt: str, prefix: str | None, n_images: int, where: str) -> tuple[list[int], int]:
        """Token ids with one id per ``<image>`` (not yet expanded) and the instruction length to mask."""
        r, tok = self.recipe_, self.tokenizer
        body = tok(prompt, add_special_tokens=False)["input_ids"]
        body = body[: r.max_length - int(r.add_bos) - int(r.add_eos)]
        if body.count(self.image_token_id) != n_images:
            raise DataError(
                f"mmembed: {where} has {n_images} image(s) but {body.count(self.image_token_id)} "
                f"{r.image_token!r} token(s) after tokenisation (literal {r.image_token!r} in the text, or "
                f"truncation at max_length={r.max_length})"
            )
        ids = ([tok.bos_token_id] if r.add_bos else []) + body + ([tok.eos_token_id] if r.add_eos else [])
        n_instr = 0
        if prefix is not None and r.mask_instruction:
            # the reference tokenises the prefix alone *with* special tokens (BOS, and EOS when add_eos)
            n_instr = len(tok(prefix, add_special_tokens=False)["input_ids"]) + int(r.add_bos) + int(r.add_eos)
        return ids, min(n_instr, len(ids))

    def _pixels(self, images: list[ImagePart]) -> torch.Tensor | None:
        """``(N_img, 3, S, S)``: the global view of every image (LLaVA-Next's first anyres patch)."""
        if not images:
            return None
        pils = [im.load() for im in images]
        s = self.image_size
        # one pinpoint = the tile size: the processor still makes the same global view, with 1 tile not 4+
        out = self.image_processor(pils, image_grid_pinpoints=[[s, s]], return_tensors="pt")
        return out["pixel_values"][:, 0]

    def prepare(self, items: list[Item], *, is_query: bool) -> dict[str, torch.Tensor]:
        rows, instr, images = [], [], []
        for i, item in enumerate(items):
            prompt, prefix = format_prompt(item, is_query, self.recipe_)
            where = f"item {item.id!r}" if item.id is not None else f"batch item {i}"
            ids, n_instr = self._tokenize(prompt, prefix, len(item.images), where)
            expanded: list[int] = []
            for t in ids:
                expanded.extend([t] * self.tokens_per_image if t == self.image_token_id else [t])
            # the prefix holds no image, so n_instr counts the same tokens after expansion
            rows.append(expanded)
            instr.append(n_instr)
            images.extend(item.images)
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        pool = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (row, n_instr) in enumerate(zip(rows, instr, strict=True)):
            start = 0 if self.recipe_.padding_side == "right" else width - len(row)
            ids[b, start : start + len(row)] = torch.tensor(row)
            mask[b, start : start + len(row)] = 1
            pool[b, start + n_instr : start + len(row)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "pool_mask": pool, "position_ids": positions,
                "pixel_values": self._pixels(images)}

    # ----------------------------------------------------------------- model side
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` -> ``(N * tokens_per_image, D)``: HF vision tower + projector + ``pack_image_features``."""
        m, cfg = self.model, self.model.config
        out = m.vision_tower(pixel_values, output_hidden_states=True)
        layer = cfg.vision_feature_layer
        feats = (out.hidden_states[layer] if isinstance(layer, int)
                 else torch.cat([out.hidden_states[i] for i in layer], dim=-1))
        if cfg.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]  # drop CLS
        proj = m.multi_modal_projector(feats)
        # one tile per image -> pack_image_features appends image_newline to the global view only
        packed, _ = m.pack_image_features(list(proj.unsqueeze(1)), None, cfg.vision_feature_select_strategy,
                                          image_newline=m.image_newline)
        return torch.cat(packed, dim=0)

    def hidden_states(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """Last hidden states of the bidirectional language model: ``(B, L, D)``."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        is_image = ids == self.image_token_id
        # image ids may lie outside the text vocabulary (32000 vs 32000 rows in MM-Embed): look up 0 there
        embeds = self.model.get_input_embeddings()(ids.masked_fill(is_image, 0))
        if batch["pixel_values"] is not None:
            feats = self.image_features(batch["pixel_values"].to(dev, self.model.dtype)).to(embeds.dtype)
            if feats.shape[0] != int(is_image.sum()):
                raise OmniretError(f"mmembed: {feats.shape[0]} image features for {int(is_image.sum())} slots")
            embeds = embeds.masked_scatter(is_image.unsqueeze(-1), feats)
        out = self.model.language_model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(dev),
            position_ids=batch["position_ids"].to(dev),
        )
        return out.last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        hidden = self.hidden_states(batch)
        return self.pooler(hidden, batch["pool_mask"].to(self.device))

    # ----------------------------------------------------------------- persistence
    def save_files(self, out: Path) -> dict[str, Any]:
        """HF layout (``config.json`` + safetensors, tokenizer, image processor) and the latent-attention
        weights; the recipe goes into ``omniret.json``."""
        from safetensors.torch import save_file

        save_parts(out, self.model, self.tokenizer, self.image_processor)
        state = {k: v.detach().cpu().contiguous() for k, v in self.pooler.state_dict().items()}
        save_file(state, str(out / LATENT_FILE))
        return {"family": FAMILY, "name": self.name, "recipe": self.recipe()}


def make_bidirectional(model: Any) -> None:
    """NV-Embed's ``BidirectionalMistralModel`` in HF terms: no causal mask, no sliding window, anywhere."""
    text_cfg = model.config.text_config
    text_cfg.is_causal = False  # transformers' create_causal_mask then builds a padding-only mask
    text_cfg.sliding_window = None
    for module in model.language_model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False  # SDPA / flash kernels read this when no mask is materialised


_RECIPE_KEYS = {f for f in MMEmbedRecipe.__dataclass_fields__}
#: the loader's own options besides the recipe's fields (see :func:`load_mmembed`)
LOADER_OPTIONS = {"device", "precision", "dtype", "name", "latent_heads"}


def load_mmembed(path: str | Path, **options: Any) -> MMEmbedEncoder:
    """Family loader: an omniret-saved directory or the released MM-Embed checkpoint layout.

    Options: ``device``, ``precision``, ``dtype`` (weights dtype, e.g. ``"bfloat16"``), ``name``,
    ``latent_heads`` (released layout only; default 8) and any :class:`MMEmbedRecipe` field.
    """
    from omniret.encoders.families import mmembed_checkpoint as ckpt

    root = Path(path)
    if not (root / "config.json").is_file():
        raise OmniretError(f"{root}: no config.json; not an HF-layout MM-Embed directory")
    saved = read_saved_config(root)
    recipe_opts = {k: v for k, v in saved.get("recipe", {}).items() if k in _RECIPE_KEYS}
    dtype_name = str(options.pop("dtype", "float32")).replace("torch.", "")
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise OmniretError(f"mmembed: dtype must name a torch dtype (float32, bfloat16, float16), got {dtype_name!r}")
    if (root / LATENT_FILE).is_file():
        model, pooler = ckpt.load_saved(root, saved.get("recipe", {}).get("latent_attention"), dtype)
    else:
        model, pooler, native = ckpt.load_reference(root, dtype, options.pop("latent_heads", 8))
        recipe_opts.update(native)
    recipe_opts.update({k: options.pop(k) for k in list(options) if k in _RECIPE_KEYS})
    tokenizer, processor = ckpt.load_processors(root)
    name = options.pop("name", saved.get("name") or root.name)
    unknown = sorted(set(options) - {"device", "precision"})  # the rest of LOADER_OPTIONS were popped above
    if unknown:
        raise OmniretError(f"mmembed: unknown option(s) {unknown}")
    recipe = replace(MMEmbedRecipe(), **recipe_opts)
    return MMEmbedEncoder(model, pooler, tokenizer, processor, recipe, name=name, **options)


FAMILIES.add(FAMILY, declare_options(_RECIPE_KEYS | LOADER_OPTIONS)(load_mmembed), "MM-Embed: LLaVA-Next vision + bidirectional Mistral + latent-attention pooling")


def _register_checkpoints() -> None:
    try:
        from omniret.encoders.hub import register_checkpoint
    except ImportError:  # hub module not available: the family still loads from paths
        return
    register_checkpoint(
        "nvidia/MM-Embed", FAMILY,
        "LLaVA-Next-7B vision + NV-Embed-v1 bidirectional Mistral, latent attention, 4096-d",
    )


_register_checkpoints()

__all__ = ["MMEmbedEncoder", "MMEmbedRecipe", "format_prompt", "render_parts", "load_mmembed", "make_bidirectional"]
