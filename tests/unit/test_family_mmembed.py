"""MM-Embed family on a tiny random checkpoint in the released layout (tests/tiny_llava.py)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiny_llava as tl  # noqa: E402
from omniret import Item  # noqa: E402
from omniret.encoders import ENCODERS, FAMILIES, SAVED_CONFIG, load_encoder  # noqa: E402
from omniret.encoders.families.mmembed import MMEmbedRecipe, format_prompt  # noqa: E402
from omniret.encoders.families.mmembed_checkpoint import map_reference_state_dict  # noqa: E402
from omniret.errors import DataError, ModelNotFoundError, OmniretError  # noqa: E402
from omniret.types import ImagePart  # noqa: E402

INST = "find a photo that matches"


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """(dir, state dict by released names) of a tiny released-layout checkpoint."""
    return tl.build_reference_checkpoint(tmp_path_factory.mktemp("mmembed_ref"))


@pytest.fixture(scope="module")
def enc(ref):
    return load_encoder(ref[0], family="mmembed")


@pytest.fixture(scope="module")
def images():
    return [tl.random_image(40, 30, 0), tl.random_image(20, 50, 1), tl.random_image(28, 28, 2)]


@pytest.fixture(scope="module")
def mixed(images):
    """Text, image, image+text and interleaved (two images) items of different lengths."""
    return [
        Item("a red car on the street near a tree", instruction=INST),
        Item(image=images[0], instruction=INST),
        Item("a dog", image=images[1], instruction=INST),
        Item(parts=["the old house", ImagePart(images[2]), "and a river", ImagePart(images[0])], instruction=INST),
        Item("cat"),
        Item("a small bird with a blue flower in the city", image=images[2]),
    ]


def test_registered():
    from omniret.encoders import load_builtins

    load_builtins()  # family modules register on first use
    assert "mmembed" in FAMILIES.names()
    assert "nvidia/MM-Embed" in ENCODERS.names()


def test_prompt_templates(images):
    r = MMEmbedRecipe()
    img = ImagePart(images[0])
    assert format_prompt(Item("a dog", image=img, instruction="I"), True, r) == (
        "Instruct: I\nQuery: <image>\na dog", "Instruct: I")
    assert format_prompt(Item("a dog", instruction="I"), True, r) == ("Instruct: I\nQuery: a dog", "Instruct: I")
    assert format_prompt(Item(image=img, instruction="I"), True, r) == ("Instruct: I\nQuery: <image>\n", "Instruct: I")
    assert format_prompt(Item("a dog", image=img), True, r) == ("Query: <image>\na dog", None)
    assert format_prompt(Item("a dog", image=img, instruction="I"), False, r) == ("<image>\na dog", None)
    assert format_prompt(Item("a dog"), False, r) == ("a dog", None)
    inter = Item(parts=["look", img, "then", "this", img])
    assert format_prompt(inter, False, r) == ("look\n<image>\nthen this\n<image>\n", None)


def test_shapes_and_normalisation(enc, mixed):
    q = enc.encode_queries(mixed, batch_size=4)
    d = enc.encode_documents(mixed, batch_size=4)
    assert q.shape == d.shape == (len(mixed), tl.HIDDEN) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert np.abs(q - d).max() > 1e-3  # queries carry the template + instruction, documents do not
    assert enc.tokens_per_image == tl.TOKENS_PER_IMAGE


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_composition_invariance(enc, mixed, side):
    old = enc.recipe_
    enc.recipe_ = replace(old, padding_side=side)
    try:
        alone = np.concatenate([enc.encode_queries([it], batch_size=1) for it in mixed])
        together = enc.encode_queries(mixed, batch_size=len(mixed))
        pairs = enc.encode_queries(mixed[::-1], batch_size=2)[::-1]
    finally:
        enc.recipe_ = old
    assert np.abs(alone - together).max() <= 1e-5
    assert np.abs(alone - pairs).max() <= 1e-5
    right = enc.encode_queries(mixed, batch_size=len(mixed))
    assert np.abs(right - together).max() <= 1e-5


def test_left_padding_is_really_left(enc, mixed):
    old = enc.recipe_
    enc.recipe_ = replace(old, padding_side="left")
    try:
        batch = enc.prepare(mixed[:2], is_query=True)
    finally:
        enc.recipe_ = old
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()


def test_bidirectional(enc):
    batch = enc.prepare([Item("a red car near the old house", instruction=INST)], is_query=True)
    with torch.inference_mode():
        h1 = enc.hidden_states(batch)
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][0, -2] = (changed["input_ids"][0, -2] + 1) % 100  # a late text token
        h2 = enc.hidden_states(changed)
    assert (h1[0, 0] - h2[0, 0]).abs().max() > 1e-4  # the first token saw the change: not causal
    assert torch.equal(batch["position_ids"][0], torch.arange(batch["input_ids"].shape[1]))


def test_instruction_tokens_excluded_from_pooling(enc, images):
    item = Item("a dog near the river", image=images[0], instruction=INST)
    tok = enc.tokenizer
    # the reference: len(tokenizer("Instruct: {inst}")) with its special tokens (here BOS ... EOS)
    n_instr = len(tok(f"Instruct: {INST}")["input_ids"])
    assert n_instr == len(tok(f"Instruct: {INST}", add_special_tokens=False)["input_ids"]) + 2
    batch = enc.prepare([item], is_query=True)
    with torch.inference_mode():
        states = enc.pooler.token_states(enc.hidden_states(batch))[0]
    by_hand = torch.nn.functional.normalize(states[n_instr:].mean(0), dim=0).numpy()
    everything = torch.nn.functional.normalize(states.mean(0), dim=0).numpy()
    got = enc.encode_queries([item])[0]
    np.testing.assert_allclose(got, by_hand, atol=1e-6)
    assert np.abs(got - everything).max() > 1e-3
    assert int(batch["pool_mask"].sum()) == batch["input_ids"].shape[1] - n_instr


def test_save_load_identical(enc, mixed, tmp_path):
    out = enc.save(tmp_path / "saved")
    saved = json.loads((out / SAVED_CONFIG).read_text())
    assert saved["family"] == "mmembed" and saved["recipe"]["latent_attention"]["num_heads"] == 8
    again = load_encoder(out)  # from the path alone
    assert again.recipe() == enc.recipe()
    np.testing.assert_array_equal(again.encode_queries(mixed), enc.encode_queries(mixed))
    np.testing.assert_array_equal(again.encode_documents(mixed), enc.encode_documents(mixed))


def test_key_mapping_from_released_layout(ref, enc):
    _, state = ref
    target = set(enc.model.state_dict())
    llava, latent = map_reference_state_dict(state, target)
    assert set(llava) == target
    assert set(latent) == set(enc.pooler.state_dict())
    assert torch.equal(latent["to_kv.weight"], state["latent_attention_model.cross_attend_blocks.0.fn.to_kv.weight"])
    assert torch.equal(latent["ffn_out.bias"], state["latent_attention_model.cross_attend_blocks.1.fn.net.2.bias"])
    vkey = next(k for k in state if k.startswith("vision_tower.vision_model."))
    assert any(torch.equal(llava[k], state[vkey]) for k in llava if k.endswith(vkey.split("vision_model.")[1]))
    # NV-Embed's own naming is an alias of language_model.*
    alias = {("nvemb_model.embedding_model." + k[len("language_model."):] if k.startswith("language_model.") else k): v
             for k, v in state.items()}
    llava2, _ = map_reference_state_dict(alias, target)
    assert all(torch.equal(llava2[k], llava[k]) for k in llava)
    with pytest.raises(OmniretError, match="no counterpart"):
        map_reference_state_dict({**state, "mystery.weight": torch.zeros(1)}, target)
    with pytest.raises(OmniretError, match="missing"):
        map_reference_state_dict({k: v for k, v in state.items() if not k.endswith("latents")}, target)


def test_released_config_uses_nvembed_text_settings(enc, ref):
    raw = json.loads((ref[0] / "config.json").read_text())
    assert raw["text_config"]["rope_theta"] == 1e6  # LLaVA-Next's, as the hub config says
    tc = enc.model.config.text_config
    assert tc.vocab_size == ref[1]["language_model.embed_tokens.weight"].shape[0]
    assert tc.rope_parameters["rope_theta"] == 10000.0  # NV-Embed-v1's (Mistral-7B-v0.1), not LLaVA's 1e6
    assert tc.is_causal is False


def test_errors(enc, images, tmp_path):
    with pytest.raises(DataError, match="image"):
        enc.encode_queries([Item("a literal <image> token", instruction=INST)])
    with pytest.raises(OmniretError, match="config.json"):
        load_encoder(tmp_path, family="mmembed")
    with pytest.raises(ModelNotFoundError, match="nvidia/MM-Embed"):
        load_encoder("nvidia/MM-Embed", download=False)


# ----------------------------------------------------------------------------------------- faithfulness
def _hand_latent_attention(h: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    """METHODS.md §2.1 steps 1-2 written out with explicit heads and softmax. ``(B, L, D)`` -> ``(B, L, D)``."""
    p = "latent_attention_model.cross_attend_blocks."

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], s[p + name + ".weight"], s[p + name + ".bias"])

    heads = tl.LATENT["heads"]
    lat = ln(s["latent_attention_model.latents"], "0.norm_context")  # (R, D)
    q = ln(h, "0.norm") @ s[p + "0.fn.to_q.weight"].T  # (B, L, H*Dh)
    kv = lat @ s[p + "0.fn.to_kv.weight"].T
    k, v = kv[:, : kv.shape[1] // 2], kv[:, kv.shape[1] // 2:]  # (R, H*Dh) each
    dh = q.shape[-1] // heads
    outs = []
    for i in range(heads):
        qi, ki, vi = q[..., i * dh:(i + 1) * dh], k[:, i * dh:(i + 1) * dh], v[:, i * dh:(i + 1) * dh]
        w = torch.softmax(qi @ ki.T / math.sqrt(dh), dim=-1)  # (B, L, R): tokens attend to the latents
        outs.append(w @ vi)
    h = torch.cat(outs, dim=-1) @ s[p + "0.fn.to_out.weight"].T + h
    up = ln(h, "1.norm") @ s[p + "1.fn.net.0.weight"].T + s[p + "1.fn.net.0.bias"]
    x, gate = up[..., : up.shape[-1] // 2], up[..., up.shape[-1] // 2:]
    return (x * torch.nn.functional.gelu(gate)) @ s[p + "1.fn.net.2.weight"].T + s[p + "1.fn.net.2.bias"] + h


def _reference_embed(ref_dir: Path, s: dict[str, torch.Tensor], prompts, pil_per_prompt, instructed):
    """The released recipe from raw HF pieces: tokenizer with special tokens, full LLaVA-Next processor then
    the global view, CLIP vision + hand projector + newline, a plain Mistral under a hand-built 4-D
    bidirectional mask (right padding, positions 0..L-1), hand latent attention, masked mean, L2."""
    from transformers import AutoTokenizer, CLIPVisionModel, MistralConfig, MistralModel
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    raw = json.loads((ref_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(ref_dir)
    proc = LlavaNextImageProcessorPil.from_pretrained(ref_dir)
    image_id = raw["image_token_index"]
    vision = CLIPVisionModel(tl.llava_config(8, 8).vision_config).eval()
    vsd = {k[len("vision_tower.vision_model."):]: v for k, v in s.items() if k.startswith("vision_tower.")}
    vision.load_state_dict({(k if k in vision.state_dict() else "vision_model." + k): v for k, v in vsd.items()})
    text_cfg = {**raw["text_config"], "vocab_size": s["language_model.embed_tokens.weight"].shape[0],
                "rope_theta": 10000.0}
    lm = MistralModel(MistralConfig(**{k: v for k, v in text_cfg.items() if k != "model_type"}))
    lm.config._attn_implementation = "eager"
    lm.load_state_dict({k[len("language_model."):]: v for k, v in s.items() if k.startswith("language_model.")})
    lm.eval()
    seqs, n_instr = [], []
    for prompt, pils, inst in zip(prompts, pil_per_prompt, instructed, strict=True):
        ids = tok(prompt)["input_ids"]
        rows = []
        feats = []
        for pil in pils:
            pv = proc(pil, return_tensors="pt")["pixel_values"][:, 0]  # all anyres tiles made, global kept
            hs = vision(pv, output_hidden_states=True).hidden_states[-2][:, 1:]
            x = torch.nn.functional.gelu(hs @ s["multi_modal_projector.linear_1.weight"].T
                                         + s["multi_modal_projector.linear_1.bias"])
            x = x @ s["multi_modal_projector.linear_2.weight"].T + s["multi_modal_projector.linear_2.bias"]
            feats.append(torch.cat([x[0], s["image_newline"][None]], dim=0))
        it = iter(feats)
        emb = s["language_model.embed_tokens.weight"]
        for t in ids:
            rows.append(next(it) if t == image_id else emb[t][None])
        seqs.append(torch.cat(rows))
        n_instr.append(len(tok(prompt.split("\nQuery: ")[0])["input_ids"]) if inst else 0)
    width = max(len(x) for x in seqs)
    b = len(seqs)
    embeds = torch.zeros(b, width, tl.HIDDEN)
    mask = torch.zeros(b, width)
    for i, x in enumerate(seqs):
        embeds[i, : len(x)] = x
        mask[i, : len(x)] = 1
    bias = (1 - mask)[:, None, None, :] * torch.finfo(torch.float32).min  # (B, 1, 1, L): padding keys only
    bias = bias.expand(b, 1, width, width)
    with torch.no_grad():
        h = lm(inputs_embeds=embeds, attention_mask=bias, position_ids=torch.arange(width)[None]).last_hidden_state
        tokens = _hand_latent_attention(h, s)
    pool = mask.clone()
    for i, n in enumerate(n_instr):
        pool[i, :n] = 0
    mean = (tokens * pool[..., None]).sum(1) / pool.sum(1, keepdim=True)
    return torch.nn.functional.normalize(mean, dim=-1).numpy()


def test_faithful_to_reference_recipe(ref, enc, images):
    ref_dir, state = ref
    queries = [Item("a dog near the river", image=images[0], instruction=INST),
               Item("the old house", instruction=INST), Item(image=images[1], instruction=INST),
               Item("a red car", image=images[2])]
    prompts = [f"Instruct: {INST}\nQuery: <image>\na dog near the river", f"Instruct: {INST}\nQuery: the old house",
               f"Instruct: {INST}\nQuery: <image>\n", "Query: <image>\na red car"]
    expect = _reference_embed(ref_dir, state, prompts, [[images[0]], [], [images[1]], [images[2]]],
                              [True, True, True, False])
    got = enc.encode_queries(queries, batch_size=4)
    assert np.abs(got - expect).max() <= 1e-4
    docs = [Item("a bird in the city", image=images[1]), Item("a tree")]
    expect_d = _reference_embed(ref_dir, state, ["<image>\na bird in the city", "a tree"], [[images[1]], []],
                                [False, False])
    assert np.abs(enc.encode_documents(docs) - expect_d).max() <= 1e-4
