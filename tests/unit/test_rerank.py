"""MLLM P(True) reranking: shared-prefix scores = naive per-pair forwards, ordering, templates and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniret import Item
from omniret.errors import ConfigError, DataError, OmniretError
from omniret.rerank import RerankTemplate, hit_item, load_reranker, resolve_template
from omniret.types import Hit, ImagePart
from tiny_models import random_image
from tiny_rerank import build_tiny_llava_next, build_tiny_qwen2vl, build_tiny_qwen25vl

BUILDERS = {"qwen2_vl": build_tiny_qwen2vl, "qwen2_5_vl": build_tiny_qwen25vl, "llava_next": build_tiny_llava_next}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("rr_img")
    paths = []
    for i, (w, h) in enumerate([(56, 56), (84, 56), (56, 112)]):
        random_image(w, h, seed=i).save(d / f"im{i}.png")
        paths.append(str(d / f"im{i}.png"))
    return paths


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def reranker(request, tmp_path_factory):
    path = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    rr = load_reranker(path, batch_size=3)
    # a tiny random model attends almost uniformly, so positions would barely matter: sharpen attention
    # (query/key projections) and the LM head so a wrong position or mask shows far above the tolerance
    with torch.no_grad():
        for name, p in rr.model.model.language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
        rr.model.get_output_embeddings().weight.mul_(20.0)
    return rr


def _docs(images):
    return [Item(image=images[1]), Item("a red car"), Item("a blue car near the river", image=images[2]),
            Item("dog"), Item(parts=["look", ImagePart(images[0]), "and", ImagePart(images[1])]),
            Item("the old man")]


@pytest.mark.parametrize("task", [None, 7, "webqa_task1"])
@pytest.mark.parametrize("with_image", [False, True])
def test_shared_prefix_equals_naive(reranker, images, task, with_image):
    query = Item("make it red", image=images[0] if with_image else None, instruction="Find the changed image.")
    fast = reranker.score(query, _docs(images), task=task)
    naive = reranker.score_naive(query, _docs(images), task=task)
    assert fast.shape == (6,) and np.all((fast >= 0) & (fast <= 1))
    assert np.ptp(fast) > 1e-3, fast  # candidates differ by far more than the tolerance
    np.testing.assert_allclose(fast, naive, atol=1e-4, rtol=0)


def test_equality_check_catches_a_position_slip(reranker, images, monkeypatch):
    """Positive control: candidate positions one step off the prefix's must break the 1e-4 agreement (a shift
    of every position would not: rotary attention only sees differences)."""
    query, docs = Item("make it red", image=images[0]), _docs(images)
    naive = reranker.score_naive(query, docs)
    real = type(reranker).positions

    def slipped(self, ids, mask, grids):  # the prefix is scored alone (batch 1); candidates come in batches of 3
        return real(self, ids, mask, grids) + int(ids.shape[0] > 1)

    monkeypatch.setattr(type(reranker), "positions", slipped)
    assert np.abs(reranker.score(query, docs) - naive).max() > 1e-3


def test_scores_do_not_depend_on_batching(reranker, images):
    query = Item("a red car")
    whole = reranker.score(query, _docs(images))
    alone = np.concatenate([reranker.score(query, [d]) for d in _docs(images)])
    np.testing.assert_allclose(whole, alone, atol=1e-5, rtol=0)


def test_rerank_orders_top_k_by_p_true_and_keeps_the_tail(reranker, images):
    hits = [Hit("a", 0.9, "image", img_path=images[1]), Hit("b", 0.8, "text", txt="a red car"),
            Hit("c", 0.7, "image,text", txt="a blue car", img_path=images[2]), Hit("d", 0.6, "text", txt="dog"),
            Hit("e", 0.5, "text", txt="tail")]
    query = Item("a red car")
    p = reranker.score(query, [hit_item(h) for h in hits[:4]])
    out = reranker.rerank(query, hits, k=4)
    expected = [hits[i].id for i in np.argsort(-p, kind="stable")]
    assert [h.id for h in out[:4]] == expected
    assert [h.rerank_score for h in out[:4]] == pytest.approx(sorted(p.tolist(), reverse=True), abs=1e-6)
    assert out[4].id == "e" and out[4].rerank_score is None and out[4].score == 0.5
    assert [h.score for h in out[:4]] == [dict(a=0.9, b=0.8, c=0.7, d=0.6)[h.id] for h in out[:4]]

    reranker.weight = 0.25
    try:
        mixed = {h.id: h.rerank_score for h in reranker.rerank(query, hits, k=4)}
    finally:
        reranker.weight = 0.0
    for h, pi in zip(hits[:4], p, strict=False):
        assert mixed[h.id] == pytest.approx(0.75 * pi + 0.25 * h.score, abs=1e-6)


def test_errors(reranker, images, tmp_path):
    hits = [Hit("a", 0.9, "text", txt="x"), Hit("b", 0.8, "image", img_path=str(tmp_path / "gone.png"))]
    with pytest.raises(OmniretError, match="rerank k=3 but only 2 hit"):
        reranker.rerank(Item("q"), hits, k=3)
    with pytest.raises(DataError, match="hit 'b': image not found: .*gone.png"):
        reranker.rerank(Item("q"), hits, k=2)
    with pytest.raises(ConfigError, match="no rerank template for task 'mscoco_task42'"):
        reranker.rerank(Item("q"), hits[:1], k=1, task="mscoco_task42")
    with pytest.raises(ConfigError, match="unknown rerank template 'nope'"):
        load_reranker(reranker.path, template="nope").score(Item("q"), [Item("d")])


def test_templates_render_prefix_and_suffix(images):
    t = resolve_template(None, "cirr_task7")
    assert t is resolve_template("composed") and t.answers == ("True", "False")
    q = Item("make it red", image=images[0])
    prefix, suffix = t.render(q, Item("a car", image=images[1]))
    assert prefix == ["Reference image and change: ", ImagePart(images[0]), "make it red", "\nCandidate image: "]
    assert suffix == [ImagePart(images[1]), "a car", "\nDoes the candidate image show the reference image with "
                      "the change applied? True or False"]
    own = resolve_template("Q={query} D={document} ({instruction})?")
    assert own.render(Item("x", instruction="I"), Item("y")) == (["Q=", "x", " D="], ["y", " (", "I", ")?"])
    assert resolve_template(None, 7, {"7": "{query}|{document}"}).text == "{query}|{document}"
    with pytest.raises(ConfigError, match="exactly once"):
        RerankTemplate("{query} only")
    with pytest.raises(ConfigError, match="two different words"):
        RerankTemplate("{query}{document}", ("Yes", "Yes"))


def test_rematch_checkpoint_scores_p_yes(tmp_path):
    from omniret import load_encoder

    enc = load_encoder(build_tiny_qwen25vl(tmp_path / "base"), family="rematch", init_tokens=True, num_tokens=2)
    saved = enc.save(tmp_path / "rematch")
    rr = load_reranker(saved)
    tpl = resolve_template(rr.template)
    assert tpl.answers == ("Yes", "No")
    s = rr.score(Item("a red car"), [Item("a red car"), Item("dog")])
    np.testing.assert_allclose(s, rr.score_naive(Item("a red car"), [Item("a red car"), Item("dog")]), atol=1e-5)


def test_non_mllm_directory_is_a_clear_error(tmp_path):
    from tiny_models import build_tiny_clip

    with pytest.raises(OmniretError, match="model_type 'clip' is not a supported reranker backbone"):
        load_reranker(build_tiny_clip(tmp_path / "clip"))


def test_hit_item_round_trip_keeps_every_image(images):
    from omniret.rerank import item_hit

    doc = Item(parts=[ImagePart(images[0]), ImagePart(images[1]), "two photos"], id="d1")
    hit = item_hit(doc, "d1", 0.3)
    assert (hit.img_path, hit.metadata["img_paths"], hit.txt) == (images[0], images[:2], "two photos")
    assert hit_item(hit).parts == doc.parts
    assert hit_item(Hit("t", 0.1, "text", txt="only text")).parts == ("only text",)
    with pytest.raises(DataError, match="'m': reranking needs images stored as files"):
        item_hit(Item(image=random_image(28, 28, 0)), "m", 0.0)
    with pytest.raises(DataError, match="hit 'e': the index stores neither text nor an image"):
        hit_item(Hit("e", 0.0, "text"))
