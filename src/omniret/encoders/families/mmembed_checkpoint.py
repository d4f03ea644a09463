"""Loading MM-Embed weights onto HF classes, without the checkpoint's remote code.

Two directory layouts:

* **omniret-saved**: ``LlavaNextModel.save_pretrained`` output + ``latent_attention.safetensors`` (our names);
* **released** (``nvidia/MM-Embed``, class ``NVMMEmbedModel``): ``config.json`` is a ``LlavaNextConfig`` plus
  ``retriever`` / ``padding_side`` / ``add_eos_token`` / ``global_image_patch_only``; the safetensors (one file
  or shards with ``model.safetensors.index.json``) hold

  - ``vision_tower.vision_model.*``, ``multi_modal_projector.linear_{1,2}.*``, ``image_newline``;
  - ``language_model.*`` — NV-Embed-v1's ``BidirectionalMistralModel`` (a bare ``MistralModel``, no ``model.``);
  - ``latent_attention_model.cross_attend_blocks.{0,1}.*`` and ``latent_attention_model.latents``.

  ``nvemb_model.embedding_model.*`` / ``embedding_model.*`` (NV-Embed's own naming) and
  ``language_model.model.*`` (HF LLaVA's legacy naming) are accepted as aliases.

The language model is NV-Embed-v1's Mistral, not the LLaVA-Next one named in ``config.json``'s
``text_config``: its vocabulary is read off ``embed_tokens`` and its other settings come from the
``retriever`` config when a local copy exists, else NV-Embed-v1's Mistral-7B-v0.1 value ``rope_theta=1e4`` [I].
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from omniret.encoders.families.latent_attention import (
    LatentAttentionConfig,
    LatentAttentionPooler,
    infer_config,
    map_reference_latent_keys,
)
from omniret.errors import ModelNotFoundError, OmniretError

log = logging.getLogger(__name__)

_LATENT_PREFIXES = ("nvemb_model.latent_attention_model.", "latent_attention_model.")
_LM_PREFIXES = ("nvemb_model.embedding_model.", "language_model.model.", "language_model.", "embedding_model.")
# NV-Embed-v1 is Mistral-7B-v0.1 based; LLaVA-Next-Mistral's text_config (v0.2) says rope_theta=1e6
_NVEMBED_TEXT_DEFAULTS = {"rope_theta": 10000.0}


def map_reference_state_dict(
    state: dict[str, torch.Tensor], target_keys: set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a released-layout state dict into ``(llava_state, latent_state)`` named as our modules expect.

    ``target_keys`` are ``LlavaNextModel.state_dict()`` names; the vision tower's ``vision_model.`` level is
    dropped or kept to match them (it differs across transformers versions). LM heads are skipped (unused
    for embedding). An unrecognised key raises :class:`OmniretError` naming it.
    """
    llava: dict[str, torch.Tensor] = {}
    latent: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("lm_head.weight"):
            continue
        lat = next((p for p in _LATENT_PREFIXES if key.startswith(p)), None)
        if lat is not None:
            latent[key[len(lat):]] = value
            continue
        lm = next((p for p in _LM_PREFIXES if key.startswith(p)), None)
        candidates = ["language_model." + key[len(lm):]] if lm is not None else [key]
        if key.startswith("vision_tower.vision_model."):
            candidates.append("vision_tower." + key[len("vision_tower.vision_model."):])
        elif key.startswith("vision_tower."):
            candidates.append("vision_tower.vision_model." + key[len("vision_tower."):])
        hit = next((c for c in candidates if c in target_keys), None)
        if hit is None:
            raise OmniretError(f"MM-Embed checkpoint key {key!r} has no counterpart in LlavaNextModel")
        llava[hit] = value
    return llava, map_reference_latent_keys(latent)


def read_safetensors(root: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    from safetensors.torch import load_file

    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ModelNotFoundError(f"{root}: no model.safetensors or model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (root / name).is_file():
            raise ModelNotFoundError(f"{root}: shard {name} listed in the index is missing")
        state.update(load_file(str(root / name)))
    return state


def _retriever_text_config(retriever: str | None) -> dict[str, Any]:
    """NV-Embed's ``text_config`` from a local copy (path or cached repo id), or the known fallback."""
    if retriever:
        cand = Path(retriever).expanduser()
        if not (cand / "config.json").is_file():
            try:
                from omniret.encoders.hub import resolve_checkpoint

                cand = resolve_checkpoint(retriever, download=False)
            except Exception:  # noqa: BLE001 - not available locally: use the documented fallback
                cand = None
        if cand is not None and (cand / "config.json").is_file():
            text = json.loads((cand / "config.json").read_text()).get("text_config") or {}
            return {k: text[k] for k in ("rope_theta", "rms_norm_eps", "max_position_embeddings") if k in text}
    log.info("MM-Embed: retriever config %r not local; using NV-Embed-v1 defaults %s", retriever,
             _NVEMBED_TEXT_DEFAULTS)
    return dict(_NVEMBED_TEXT_DEFAULTS)


def reference_config(raw: dict[str, Any], embed_rows: int) -> Any:
    """``LlavaNextConfig`` for a released checkpoint: MM-Embed's extras removed, text config fixed to NV-Embed's."""
    from transformers import LlavaNextConfig

    cfg = {k: v for k, v in raw.items()
           if k not in ("auto_map", "architectures", "retriever", "padding_side", "add_eos_token",
                        "global_image_patch_only", "_name_or_path", "torch_dtype", "dtype", "transformers_version")}
    text = dict(cfg.get("text_config") or {})
    nvembed = _retriever_text_config(raw.get("retriever"))
    text.update(nvembed)
    if "rope_theta" in nvembed and isinstance(text.get("rope_parameters"), dict):
        # transformers 5 writes rope settings under rope_parameters, which win over a top-level rope_theta
        text["rope_parameters"] = {**text["rope_parameters"], "rope_theta": nvembed["rope_theta"]}
    text.update(vocab_size=embed_rows, model_type="mistral")
    text.pop("architectures", None)
    cfg["text_config"] = text
    return LlavaNextConfig.from_dict(cfg)


def load_reference(root: Path, dtype: torch.dtype, latent_heads: int = 8) -> tuple[Any, LatentAttentionPooler, dict]:
    """Model, pooler and recipe options from a released-layout directory."""
    from transformers import LlavaNextModel

    raw = json.loads((root / "config.json").read_text())
    if raw.get("global_image_patch_only") is False:
        raise OmniretError(f"{root}: global_image_patch_only=false (anyres views) is not supported by omniret")
    state = read_safetensors(root)
    embed = next((v for k, v in state.items() if k.endswith("embed_tokens.weight")), None)
    if embed is None:
        raise OmniretError(f"{root}: no language-model embed_tokens weight in the checkpoint")
    config = reference_config(raw, embed.shape[0])
    model = LlavaNextModel(config).to(dtype)
    llava, latent = map_reference_state_dict(state, set(model.state_dict()))
    _load_strict(model, llava, root)
    pooler = LatentAttentionPooler(infer_config(latent, num_heads=latent_heads))
    _load_strict(pooler, latent, root)
    native = {"padding_side": raw.get("padding_side", "right"), "add_eos": bool(raw.get("add_eos_token", True))}
    return model, pooler.to(dtype), native


def load_saved(root: Path, latent_cfg: dict | None, dtype: torch.dtype) -> tuple[Any, LatentAttentionPooler]:
    """Model and pooler from an omniret-saved directory."""
    from safetensors.torch import load_file
    from transformers import LlavaNextModel

    from omniret.encoders.families.mmembed import LATENT_FILE

    model = LlavaNextModel.from_pretrained(root, dtype=dtype)
    latent = load_file(str(root / LATENT_FILE))
    cfg = LatentAttentionConfig.from_dict(latent_cfg) if latent_cfg else infer_config(latent)
    pooler = LatentAttentionPooler(cfg)
    _load_strict(pooler, latent, root)
    return model, pooler.to(dtype)


def load_processors(root: Path) -> tuple[Any, Any]:
    """Tokenizer and the torchvision-free LLaVA-Next image processor saved beside the weights."""
    from transformers import AutoTokenizer
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    try:
        tokenizer = AutoTokenizer.from_pretrained(root)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"{root}: cannot load the tokenizer ({e})") from e
    if not (root / "preprocessor_config.json").is_file():
        raise ModelNotFoundError(f"{root}: no preprocessor_config.json (LLaVA-Next image processor settings)")
    return tokenizer, LlavaNextImageProcessorPil.from_pretrained(root)


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], root: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    bad = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or bad:
        raise OmniretError(
            f"{root}: weights do not fit {type(module).__name__}: missing {missing[:5]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad[:3]]}"
        )
    module.load_state_dict(state, strict=True)


__all__ = ["map_reference_state_dict", "read_safetensors", "reference_config", "load_reference", "load_saved",
           "load_processors"]
