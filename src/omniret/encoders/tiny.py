"""Tiny random checkpoints of every trainable family, built from config objects (no hub, milliseconds).

Tokenizers are trained locally with ``tokenizers`` on a few hundred synthetic sentences, with the special
tokens each family needs. :func:`make_tiny` writes a directory ``load_encoder(dir)`` reloads (with its
``omniret.json``); ``omniret models make-tiny FAMILY DIR`` and a training config's ``model.init:
tiny:<family>`` call it, so smoke runs and tests need no downloaded weights. The models are random: they
exercise code paths and training dynamics, never retrieval quality.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
SIGLIP_SPECIALS = ["</s>", "<pad>", "<unk>"]

_WORDS = (
    "a the red blue green small large dog cat car house tree photo image picture of on in with near "
    "running sitting parked old new bright dark man woman child bird flower river mountain street city "
    "represent given find retrieve query document caption matches that is what kind this you are helpful "
    "assistant system user instruction question answer describe show me an everyday"
).split()


def corpus_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """``n`` synthetic sentences over a small vocabulary (tokenizer training data)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def _train_bpe(specials: list[str], vocab_size: int = 300, lowercase: bool = False):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus_sentences(), trainer)
    return tok


def qwen_tokenizer():
    """A Qwen-style tokenizer: byte-level BPE, chat/vision specials, no BOS/EOS added, pad = ``<|endoftext|>``."""
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(QWEN_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="right"
    )


def clip_tokenizer():
    """A CLIP-style tokenizer: ``<|startoftext|> text <|endoftext|>``, pad = ``<|endoftext|>``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(CLIP_SPECIALS, lowercase=True)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=32,
    )


def siglip_tokenizer():
    """A SigLIP-style tokenizer: ``text </s>``, pad = ``<pad>`` (SigLIP pads to max_length)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(SIGLIP_SPECIALS, lowercase=True)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=32
    )


# --------------------------------------------------------------------------------------------- Qwen-VL
def _qwen_common(tok, hidden: int) -> dict:
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    top = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return {"text_config": text, **top}


def _qwen_scaled(tok, hidden: int, layers: int, max_positions: int) -> dict:
    """:func:`_qwen_common` grown for benchmarks: ``layers`` layers of width ``hidden`` (8 heads, 4 KV heads), with
    M-RoPE sections adding up to head_dim / 2 in Qwen's own 1/4, 3/8, 3/8 split."""
    common = _qwen_common(tok, hidden)
    common["text_config"].update(num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                 intermediate_size=4 * hidden, max_position_embeddings=max_positions)
    half = hidden // 8 // 2
    common["text_config"]["rope_parameters"]["mrope_section"] = [half // 4, 3 * half // 8,
                                                                 half - half // 4 - 3 * half // 8]
    return common


def _save(out: Path, *parts) -> Path:
    """``save_pretrained`` every part (model, tokenizer, image processor) into one directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        part.save_pretrained(out)
    return out


def build_scaled_qwen2vl(out: Path, tok, hidden: int, layers: int, vision_depth: int, vision_width: int,
                         max_pixels: int) -> Path:
    """A random Qwen2-VL grown for benchmarks (:func:`_qwen_scaled` text model, ``vision_depth`` blocks of width
    ``vision_width``, 4 heads; images up to ``max_pixels``) + ``tok`` + a PIL image processor, saved in ``out``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(0)
    common = _qwen_scaled(tok, hidden, layers, max_positions=4096)
    vision = dict(depth=vision_depth, embed_dim=vision_width, hidden_size=hidden, num_heads=4, mlp_ratio=2)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=vision, **common)).eval()
    return _save(out, model, tok, Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=max_pixels))


def _qwen_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # tiny images: 28..112 px per side -> 1..16 merged visual tokens
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112)


def build_tiny_qwen2vl(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Tiny random ``Qwen2VLForConditionalGeneration`` + tokenizer + PIL image processor in ``out``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    tok = qwen_tokenizer()
    vision = dict(depth=2, embed_dim=16, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    cfg = Qwen2VLConfig(vision_config=vision, **_qwen_common(tok, hidden))
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    return _save(out, model, tok, _qwen_image_processor())


def build_tiny_qwen25vl(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Tiny random ``Qwen2_5_VLForConditionalGeneration`` (windowed vision tower) in ``out``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    tok = qwen_tokenizer()
    vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                  fullatt_block_indexes=[1])
    cfg = Qwen2_5_VLConfig(vision_config=vision, **_qwen_common(tok, hidden))
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    return _save(out, model, tok, _qwen_image_processor())


# --------------------------------------------------------------------------------------------- CLIP / SigLIP
def build_tiny_clip(out: Path, seed: int = 0) -> Path:
    """Tiny random ``CLIPModel`` (32 px images, projection dim 16) + tokenizer + PIL image processor."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    tok = clip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=32,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(out, model, tok, proc)


def build_tiny_siglip(out: Path, seed: int = 0) -> Path:
    """Tiny random ``SiglipModel`` (32 px images, text length 32) + tokenizer + PIL image processor."""
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(seed)
    tok = siglip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return _save(out, model, tok, proc)



# --------------------------------------------------------------------------------------------- MM-Embed
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>"]


def llava_tokenizer(vocab_size: int = 300, texts: list[str] | None = None):
    """A Llama-like tokenizer: BPE over Metaspace pieces with ``"\\n"`` its own token, ``<s> $A </s>``
    (``add_eos_token``), ``<image>`` and ``<pad>`` appended after the text vocabulary (as in LLaVA-Next).
    ``texts`` (default: :func:`corpus_sentences`) is the BPE training text."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    tok.train_from_iterator(texts if texts is not None else corpus_sentences(),
                            trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAVA_SPECIALS))
    tok.add_special_tokens([AddedToken("<image>", special=True), AddedToken("<pad>", special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="right")


def build_tiny_mmembed(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Tiny random MM-Embed (LLaVA-Next: CLIP vision 28 px + projector + bidirectional Mistral, and a
    latent-attention pooler), saved in omniret's layout with ``omniret.json``."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextModel, MistralConfig
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from omniret.encoders.families.latent_attention import LatentAttentionConfig, LatentAttentionPooler
    from omniret.encoders.families.mmembed import MMEmbedEncoder

    torch.manual_seed(seed)
    tok = llava_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    s, patch = 28, 7
    text = MistralConfig(vocab_size=image_id, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_theta=10000.0, sliding_window=None)
    vision = CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                              image_size=s, patch_size=patch)
    cfg = LlavaNextConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_id,
                          image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s]], vision_feature_layer=-2,
                          vision_feature_select_strategy="default")
    pooler = LatentAttentionPooler(LatentAttentionConfig(hidden_dim=hidden, num_latents=16, num_heads=4, head_dim=hidden))
    proc = LlavaNextImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                      image_grid_pinpoints=[[s, 2 * s], [2 * s, s], [2 * s, 2 * s]])
    enc = MMEmbedEncoder(LlavaNextModel(cfg), pooler, tok, proc, name="tiny-mmembed")
    enc.save(out)
    return Path(out)


# --------------------------------------------------------------------------------------------- omni-mini
def build_tiny_omni_mini(out: Path, hidden: int = 32, seed: int = 0) -> Path:
    """omni-mini over a tiny random 2-layer BERT (``out/text``) with MiniLM's real tokenizer."""
    import shutil

    from transformers import BertConfig, BertModel

    from omniret.encoders.minilm import default_minilm_path
    from omniret.encoders.omni_mini import OmniMiniEncoder

    torch.manual_seed(seed)
    text = Path(out) / "text"
    BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=128)).save_pretrained(text)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / f, text / f)
    OmniMiniEncoder(text_model=text, grid=1, max_length=64, name="tiny-omni-mini").save(out)
    return Path(out)


# --------------------------------------------------------------------------------------------- registry
def _hf_then_family(builder: Callable[..., Path], family: str, **options: Any) -> Callable[..., Path]:
    """Build the HF directory, then load it as ``family`` and save it back with its ``omniret.json``."""

    def make(out: Path, seed: int = 0) -> Path:
        from omniret.encoders import FAMILIES, load_builtins

        load_builtins()
        builder(out, seed=seed)
        FAMILIES.get(family)(out, **options).save(out)
        return Path(out)

    return make


TINY: dict[str, Callable[..., Path]] = {
    "gme": _hf_then_family(build_tiny_qwen2vl, "gme"),
    "vlm2vec": _hf_then_family(build_tiny_qwen2vl, "vlm2vec"),
    "rematch": _hf_then_family(build_tiny_qwen25vl, "rematch", init_tokens=True, num_tokens=4),
    "clip": _hf_then_family(build_tiny_clip, "clip"),
    "siglip": _hf_then_family(build_tiny_siglip, "siglip"),
    "mmembed": lambda out, seed=0: build_tiny_mmembed(out, seed=seed),
    "omni-mini": lambda out, seed=0: build_tiny_omni_mini(out, seed=seed),
}


def make_tiny(family: str, out: str | Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of ``family`` into ``out``; ``load_encoder(out)`` reloads it."""
    from omniret.errors import ConfigError

    if family not in TINY:
        raise ConfigError(f"no tiny builder for family {family!r}; choose one of {', '.join(sorted(TINY))}")
    return TINY[family](Path(out), seed=seed)
