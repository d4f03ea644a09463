"""ReMatch generative matching in one packed forward pass (tiny random Qwen2.5-VL, fp32, one thread).

The reference is independent of the packing: each of the 8 (query view × document view) pairs is run as its own
plain sequence ``prompt → query view → document view → answer`` through the HF model's standard path (its own
causal mask, its own M-RoPE ``get_rope_index`` over the whole sequence, its own image-placeholder scattering).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniret import Item, load_encoder
from omniret.errors import ConfigError, OmniretError
from omniret.losses import orthogonal_loss
from omniret.training.config import LoraConfig, ModelConfig
from omniret.training.lora import apply_policy
from omniret.training.matching import MatchingPacker, MatchingProjector, answer_logits, packed_matching_loss
from tiny_models import build_tiny_qwen25vl, random_image

K = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    path = build_tiny_qwen25vl(tmp_path_factory.mktemp("q25"))
    enc = load_encoder(path, family="rematch", init_tokens=True, num_tokens=K)
    apply_policy(enc, ModelConfig(lora=LoraConfig(r=4, alpha=8)))
    torch.manual_seed(0)
    for n, p in enc.trainable_module().named_parameters():
        if "lora_B" in n:  # LoRA B starts at zero; make the adapters matter
            torch.nn.init.normal_(p, std=0.05)
    enc.train()
    projector = MatchingProjector(enc.dim)
    return enc, projector


def triplets():
    a, b, c = random_image(56, 28, 1), random_image(28, 56, 2), random_image(56, 56, 3)
    queries = [Item("a red dog", image=a, instruction="Find the document."), Item("small bird near the river")]
    positives = [Item("the dog is red"), Item(parts=["a bird", b])]
    negatives = [Item(image=c), Item("an old car on a dark street")]
    return queries, positives, negatives


def embeddings(enc, queries, positives, negatives):
    """``(3B, H)`` E* (mean of the K token states) in sample order, plus the ``(3B, K, H)`` token states."""
    states = [enc.token_states(enc.prepare(list(x), is_query=i == 0))
              for i, x in enumerate((queries, positives, negatives))]
    tok = torch.stack(states, 1).reshape(-1, K, enc.dim)
    return tok.mean(1), tok


def standalone_loss(enc, projector, packed, items, emb) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean CE over every answer, each answer computed from its own plain sequence."""
    backbone = enc.backbone
    losses, logits = [], []
    for (r, qv, dv), label in zip(packed.pairs, packed.labels.tolist(), strict=True):
        segs = {s.name: s for s in packed.segments[r]}
        chain = [segs["P"], segs[qv], segs[f"{dv}|{qv}"], segs[f"A|{qv}|{dv}"]]
        ids = torch.tensor([[t for s in chain for t in s.ids]])
        x = backbone.get_input_embeddings()(ids)
        raw_items, at = [], 0
        for s, name in zip(chain[1:3], (qv, dv), strict=True):
            which = {"q": 0, "d+": 1, "d-": 2}[name.lstrip("Z")]
            if name.startswith("Z"):  # the soft token is the segment's last token
                x = x.clone()
                x[0, at + len(chain[0].ids) + len(s.ids) - 1] = projector(emb[3 * r + which][None])[0, 0]
            else:
                raw_items.append(items[which][r])
            at += len(s.ids)
        pv, grid = enc._image_features(raw_items)
        types = (ids == enc.image_token_id).to(torch.int32)
        kw = {}
        if grid is not None:
            pos, _ = backbone.get_rope_index(input_ids=ids, mm_token_type_ids=types, image_grid_thw=grid)
            kw = dict(pixel_values=pv, image_grid_thw=grid)
        else:
            pos = torch.arange(ids.shape[1])[None]
        h = backbone(input_ids=ids, inputs_embeds=x, attention_mask=torch.ones_like(ids), position_ids=pos,
                     mm_token_type_ids=types, use_cache=False, **kw).last_hidden_state
        out = enc.model.lm_head(h[0, -1:])
        logits.append(out[0])
        losses.append(F.cross_entropy(out, torch.tensor([label])))
    return torch.stack(losses).mean(), logits


def trainable(enc, projector):
    named = {f"model.{n}": p for n, p in enc.model.named_parameters() if "lora_" in n}
    named.update({f"bank.{n}": p for n, p in enc.banks.items()})
    named.update({f"proj.{n}": p for n, p in projector.named_parameters()})
    return named


def grads(loss, params):
    gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), gs, strict=True)}


def test_single_pass_equals_eight_standalone_passes_loss_and_gradients(setup):
    enc, projector = setup
    q, p, n = triplets()
    packed = MatchingPacker(enc).pack(q, p, n, torch.Generator().manual_seed(0))
    assert len(packed.pairs) == 16 and packed.image_grid_thw.shape[0] == 3
    params = trainable(enc, projector)
    emb, _ = embeddings(enc, q, p, n)
    single = packed_matching_loss(enc, projector, packed, emb)
    g_single = grads(single, params)
    emb, _ = embeddings(enc, q, p, n)
    ref, _ = standalone_loss(enc, projector, packed, (q, p, n), emb)
    g_ref = grads(ref, params)
    assert abs(float(single.detach()) - float(ref.detach())) <= 1e-5
    kinds = set()
    for name in params:
        scale = float(g_ref[name].abs().max())
        if scale > 0:
            kinds.add(name.split(".")[0])
        assert float((g_single[name] - g_ref[name]).abs().max()) <= 1e-5 * max(1.0, scale), name
    assert kinds == {"model", "bank", "proj"}  # gradients reach LoRA, token banks and projector


def test_answers_see_only_their_pair(setup):
    """Perturbing any view changes exactly the answers whose pair contains it."""
    enc, projector = setup
    q, p, n = triplets()
    packer = MatchingPacker(enc)
    with torch.no_grad():
        emb, _ = embeddings(enc, q, p, n)
        base = answer_logits(enc, projector, packer.pack(q, p, n, torch.Generator().manual_seed(0)), emb)
        cases = {  # view name -> (queries, positives, negatives, embeddings) with that view of sample 0 changed
            "q": ([Item("a blue cat", image=random_image(56, 28, 9), instruction="Find the document.")] + q[1:],
                  p, n, emb),
            "d+": (q, [Item("the dog is very red")] + p[1:], n, emb),
            "d-": (q, p, [Item(image=random_image(28, 28, 7))] + n[1:], emb),
        }
        for view, row in (("Zq", 0), ("Zd+", 1), ("Zd-", 2)):
            e = emb.clone()
            e[row] += 1.0
            cases[view] = (q, p, n, e)
        for view, (qq, pp, nn, e) in cases.items():
            packed = packer.pack(qq, pp, nn, torch.Generator().manual_seed(0))
            out = answer_logits(enc, projector, packed, e)
            for i, (r, qv, dv) in enumerate(packed.pairs):
                diff = float((out[i] - base[i]).abs().max())
                if r == 0 and view in (qv, dv):
                    assert diff > 1e-4, (view, qv, dv)
                else:
                    assert diff <= 1e-5, (view, r, qv, dv, diff)


def test_slot_reproducible_and_label_free(setup):
    enc, projector = setup
    q, p, n = triplets()
    packer = MatchingPacker(enc)
    q8, p8, n8 = q * 4, p * 4, n * 4
    slots = [packer.pack(q8, p8, n8, torch.Generator().manual_seed(s)).slots for s in (3, 3, 4)]
    assert slots[0] == slots[1] and set(slots[0]) == {1, 2} and slots[0] != slots[2]
    # the slot moves d⁺ physically but not its positions or visibility: same logits either way
    with torch.no_grad():
        emb, _ = embeddings(enc, q, p, n)
        outs = {}
        for seed in range(8):
            packed = packer.pack(q, p, n, torch.Generator().manual_seed(seed))
            out = answer_logits(enc, projector, packed, emb)
            outs[tuple(packed.slots)] = {pair: out[i] for i, pair in enumerate(packed.pairs)}
    assert len(outs) > 1
    first = next(iter(outs.values()))
    for out in outs.values():
        assert max(float((out[k] - first[k]).abs().max()) for k in first) <= 1e-5


def test_feat_variant_and_labels(setup):
    enc, projector = setup
    q, p, n = triplets()
    packed = MatchingPacker(enc, views="feat", soft_tokens=2).pack(q, p, n)
    assert [(qv, dv) for r, qv, dv in packed.pairs if r == 0] in ([("Zq", "Zd+"), ("Zq", "Zd-")],
                                                                     [("Zq", "Zd-"), ("Zq", "Zd+")])
    assert packed.pixel_values is None  # no raw view, so no image is encoded
    yes, no = enc.tokenizer("Yes", add_special_tokens=False)["input_ids"][0], \
        enc.tokenizer("No", add_special_tokens=False)["input_ids"][0]
    assert [yes if dv == "Zd+" else no for _, _, dv in packed.pairs] == packed.labels.tolist()
    two = MatchingProjector(enc.dim, soft_tokens=2)
    with torch.no_grad():
        emb, _ = embeddings(enc, q, p, n)
        single = packed_matching_loss(enc, two, packed, emb)
    assert torch.isfinite(single)
    with pytest.raises(ConfigError, match="views"):
        MatchingPacker(enc, views="raw")
    with pytest.raises(OmniretError, match="equally many"):
        MatchingPacker(enc).pack(q, p, n[:1])


def test_orth_on_token_states_has_gradient_to_banks(setup):
    enc, _ = setup
    q, p, n = triplets()
    _, tok = embeddings(enc, q, p, n)
    loss = orthogonal_loss(tok)
    (g,) = torch.autograd.grad(loss, [enc.banks["query"]])
    # independently: 2/(K(K-1)) Σ_{i<j} cos(t_i, t_j)² per input, averaged (arXiv 2511.19278 §3)
    t = tok.detach().double()
    n_in, k = t.shape[:2]
    ref = sum(torch.nn.functional.cosine_similarity(t[a, i], t[a, j], dim=0) ** 2
              for a in range(n_in) for i in range(k) for j in range(i + 1, k)) * 2 / (k * (k - 1)) / n_in
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert float(g.abs().max()) > 0


def test_match_term_from_config_is_the_packed_loss_and_resumable(setup):
    from omniret.losses import LossInputs, build_loss

    enc, _ = setup
    q, p, n = triplets()
    term = build_loss([{"name": "match", "weight": 0.1}]).bind(enc).terms["match"]
    with torch.no_grad():
        emb, _ = embeddings(enc, q, p, n)
        inputs = LossInputs(emb[0::3], emb[1::3], emb[2::3][:, None], encoder=enc,
                            items={"queries": q, "positives": p, "negatives": n})
        got = term(inputs)
        packed = MatchingPacker(enc).pack(q, p, n, torch.Generator().manual_seed(0))  # seed 0, first call
        want = packed_matching_loss(enc, term.projector, packed, emb)
        assert float(got) == pytest.approx(float(want), abs=1e-6)
        assert int(term.state_dict()["calls"]) == 1  # checkpointed with the loss state: resumed draws continue
        # without hard negatives the next query's positive is the negative
        inputs.negatives = None
        assert torch.isfinite(term(inputs))
    with pytest.raises(ConfigError, match="Qwen2-VL"):
        term.bind(type("Other", (), {"family": "clip"})())


def test_orth_term_reads_every_sides_token_states(setup):
    from omniret.losses import LossInputs, build_loss

    enc, _ = setup
    q, p, n = triplets()
    with torch.no_grad():
        emb, tok = embeddings(enc, q, p, n)
    term = build_loss([{"name": "orth"}]).terms["orth"]
    inputs = LossInputs(emb[0::3], emb[1::3], tokens={"queries": tok[0::3], "positives": tok[1::3], "negatives": None})
    assert float(term(inputs)) == pytest.approx(float(orthogonal_loss(torch.cat([tok[0::3], tok[1::3]]))), abs=1e-7)
    with pytest.raises(OmniretError, match="token states"):
        term(LossInputs(emb[0::3], emb[1::3]))
