"""The MTEB adapter runs `mteb.evaluate` offline on small in-memory text and image retrieval tasks."""

from __future__ import annotations

import mteb
import pytest
from _eval_helpers import PALETTE, ColourEncoder
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from PIL import Image

from omniret.integrations.mteb import MTEBEncoder

_META = dict(
    description="omniret offline test task", reference="https://example.org/omniret-test",
    dataset={"path": "NA", "revision": "NA"}, eval_splits=["test"], eval_langs=["eng-Latn"],
    date=("2024-01-01", "2024-01-01"), dialect=[], domains=[], task_subtypes=[], license="cc-by-4.0",
    annotations_creators="derived", sample_creation="found", bibtex_citation="", main_score="ndcg_at_10",
)


class ColourT2I(AbsTaskRetrieval):
    metadata = TaskMetadata(name="OmniretColourT2I", type="Any2AnyRetrieval", category="t2i",
                            modalities=["image", "text"], **_META)

    def load_data(self, num_proc=None, **kwargs):
        names = list(PALETTE)
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=Dataset.from_dict({"id": [f"q{i}" for i in range(4)], "text": [f"a {n} square" for n in names]}),
            corpus=Dataset.from_dict({"id": [f"d{i}" for i in range(4)],
                                      "image": [Image.new("RGB", (16, 16), PALETTE[n]) for n in names]}),
            relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(4)},
            top_ranked=None,
        )}}
        self.data_loaded = True


class ColourText(AbsTaskRetrieval):
    # the prompt mentions "image": ColourEncoder then puts queries on the image side, away from text docs
    metadata = TaskMetadata(name="OmniretColourText", type="Retrieval", category="t2t", modalities=["text"],
                            prompt={"query": "Find the image"}, **_META)

    def load_data(self, num_proc=None, **kwargs):
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=Dataset.from_dict({"id": ["q0", "q1"], "text": ["red", "blue"]}),
            corpus=Dataset.from_dict({"id": ["d0", "d1", "d2"], "title": ["", "", ""],
                                      "text": ["blue", "red", "green"]}),
            relevant_docs={"q0": {"d1": 1}, "q1": {"d0": 1}},
            top_ranked=None,
        )}}
        self.data_loaded = True


def _score(model, task):
    res = mteb.evaluate(model, task, cache=None, show_progress_bar=False, co2_tracker=False)
    return res.task_results[0].scores["test"][0]


def test_image_task_perfect_with_colour_encoder():
    s = _score(MTEBEncoder(ColourEncoder()), ColourT2I())
    assert s["ndcg_at_10"] == pytest.approx(1.0) and s["recall_at_1"] == pytest.approx(1.0)


class Recording(ColourEncoder):
    """Remembers what reached prepare(): (is_query, instruction, modality) per item."""

    def __init__(self):
        self.seen = []

    def prepare(self, items, *, is_query):
        self.seen += [(is_query, it.instruction, it.modality) for it in items]
        return super().prepare(items, is_query=is_query)


def test_task_prompt_reaches_the_encoder_as_instruction():
    rec = Recording()
    enc = MTEBEncoder(rec)
    assert enc.query_instruction(ColourText.metadata) == "Find the image"
    s = _score(enc, ColourText())
    assert s["ndcg_at_10"] == pytest.approx(1.0)
    assert sorted(set(rec.seen)) == [(False, None, "text"), (True, "Find the image", "text")]
    assert sum(q for q, _, _ in rec.seen) == 2 and len(rec.seen) == 5
    override = MTEBEncoder(ColourEncoder(), instructions={"OmniretColourText": "caption please"})
    assert override.query_instruction(ColourText.metadata) == "caption please"
    assert MTEBEncoder(ColourEncoder(), use_task_prompt=False).query_instruction(ColourText.metadata) is None
    assert enc.mteb_model_meta.embed_dim == ColourEncoder.dim
