"""Tiny random MM-Embed checkpoints in the *released* layout (``NVMMEmbedModel``), built from config objects.

The layout copies what ``nvidia/MM-Embed`` ships (key names checked against its remote code and a public
device map): ``vision_tower.vision_model.*``, ``multi_modal_projector.*``, ``image_newline``,
``language_model.*`` (a bare Mistral), ``latent_attention_model.cross_attend_blocks.{0,1}.*`` + ``latents``,
sharded safetensors with an index, and a ``config.json`` whose ``text_config`` is LLaVA-Next's (bigger
vocabulary, rope_theta 1e6) while the weights are NV-Embed's (vocabulary = text tokens only, rope 1e4).
As in LLaVA-Next's tokenizer, ``<image>`` and ``<pad>`` are added after the text vocabulary, so their ids
have no embedding row.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HIDDEN = 32
IMAGE_SIZE, PATCH = 28, 7
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2 + 1  # patches + image_newline
LATENT = {"num_latents": 16, "heads": 8, "head_dim": HIDDEN, "mult": 4}

_WORDS = (
    "a the red blue green small dog cat car house tree photo image of on in with near running old new man "
    "woman bird flower river street city given find retrieve query caption instruct that matches question "
    "answer describe picture shows an everyday scene : , . ?"
).split()


def sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    return out + ["Instruct: find a photo\nQuery: a red car", "Query: a dog\n"]


def llava_tokenizer():
    """A Llama-like tokenizer (:func:`omniret.encoders.tiny.llava_tokenizer`) trained on this module's sentences:
    ``"\\n"`` always its own token, ``<s> $A </s>`` post-processing, ``<image>``/``<pad>`` appended last."""
    from omniret.encoders.tiny import llava_tokenizer as build

    return build(vocab_size=200, texts=sentences())


def image_processor():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    s = IMAGE_SIZE
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s},
        image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s]],
    )


def llava_config(text_vocab: int, image_token_id: int, rope_theta: float = 10000.0):
    from transformers import CLIPVisionConfig, LlavaNextConfig, MistralConfig

    text = MistralConfig(
        vocab_size=text_vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=rope_theta,
        sliding_window=None,
    )
    vision = CLIPVisionConfig(
        hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH,
    )
    s = IMAGE_SIZE
    return LlavaNextConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_token_id,
        image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s]], vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def reference_latent_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random NV-Embed latent-attention weights under the reference names (LayerNorms not at identity)."""
    d, inner, r = HIDDEN, LATENT["heads"] * LATENT["head_dim"], LATENT["num_latents"]
    ff = LATENT["mult"] * d

    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=gen) * scale

    p = "latent_attention_model."
    return {
        p + "latents": rnd(r, d, scale=1.0),
        p + "cross_attend_blocks.0.norm.weight": 1 + rnd(d), p + "cross_attend_blocks.0.norm.bias": rnd(d),
        p + "cross_attend_blocks.0.norm_context.weight": 1 + rnd(d),
        p + "cross_attend_blocks.0.norm_context.bias": rnd(d),
        p + "cross_attend_blocks.0.fn.to_q.weight": rnd(inner, d),
        p + "cross_attend_blocks.0.fn.to_kv.weight": rnd(2 * inner, d),
        p + "cross_attend_blocks.0.fn.to_out.weight": rnd(d, inner),
        p + "cross_attend_blocks.1.norm.weight": 1 + rnd(d), p + "cross_attend_blocks.1.norm.bias": rnd(d),
        p + "cross_attend_blocks.1.fn.net.0.weight": rnd(2 * ff, d), p + "cross_attend_blocks.1.fn.net.0.bias": rnd(2 * ff),
        p + "cross_attend_blocks.1.fn.net.2.weight": rnd(d, ff), p + "cross_attend_blocks.1.fn.net.2.bias": rnd(d),
    }


def build_reference_checkpoint(root: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write a tiny checkpoint in MM-Embed's released layout; returns ``(dir, state_dict by released names)``."""
    from safetensors.torch import save_file
    from transformers import LlavaNextModel

    root.mkdir(parents=True, exist_ok=True)
    tok = llava_tokenizer()
    tok.save_pretrained(root)
    image_processor().save_pretrained(root)
    image_id = tok.convert_tokens_to_ids("<image>")
    text_vocab = image_id  # <image> and <pad> come after the text vocabulary, as in LLaVA-Next
    torch.manual_seed(seed)
    model = LlavaNextModel(llava_config(text_vocab, image_id))
    state: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model."):
            k = "vision_tower.vision_model." + k[len("vision_tower."):]
        state[k] = v.detach().clone().contiguous()
    state.update(reference_latent_state(torch.Generator().manual_seed(seed + 1)))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for fname, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(root / fname))
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    # config.json as the hub ships it: LLaVA-Next's text_config (wrong vocab and rope for NV-Embed) + extras
    cfg = llava_config(text_vocab + 2, image_id, rope_theta=1e6).to_dict()
    rope = cfg["text_config"].pop("rope_parameters", None) or {"rope_theta": 1e6}
    cfg["text_config"]["rope_theta"] = rope["rope_theta"]  # transformers 4.x style, as on the hub
    cfg.update(architectures=["NVMMEmbedModel"], auto_map={"AutoModel": "modeling_nvmmembed.NVMMEmbedModel"},
               retriever="nvidia/NV-Embed-v1", padding_side="right", add_eos_token=True,
               global_image_patch_only=True)
    (root / "config.json").write_text(json.dumps(cfg, indent=2))
    return root, state


def random_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
