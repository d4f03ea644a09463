"""Benchmark facts kept apart from the metrics: M-BEIR dataset/task ids and headline k, MMEB task tables.

Sources (see METHODS.md §1): UniIR ``preprocessing/utils.py`` (``DATASET_IDS``, ``MBEIR_TASK``) and
``retrieval.yaml`` (which k is reported); VLM2Vec's MMEB v1 tables (meta-task, IND/OOD).
"""

from __future__ import annotations

import re

from omniret.data.mbeir import MBEIR_TASKS, target_modality  # noqa: F401  (the facts live with the reader)

# ---------------------------------------------------------------------------------------------- M-BEIR
#: UniIR dataset ids (the prefix of every qid/did, "<dataset_id>:<n>").
MBEIR_DATASET_IDS: dict[str, int] = {
    "visualnews": 0,
    "fashion200k": 1,
    "webqa": 2,
    "edis": 3,
    "nights": 4,
    "oven": 5,
    "infoseek": 6,
    "fashioniq": 7,
    "cirr": 8,
    "mscoco": 9,
}

#: The three tasks whose papers report Recall@10 instead of Recall@5.
_HEADLINE_AT_10 = frozenset({"fashion200k_task0", "fashion200k_task3", "fashioniq_task7"})

#: Recall cut-offs computed for every task (UniIR's retrieval.yaml computes 1/5/10 everywhere).
MBEIR_KS: tuple[int, ...] = (1, 5, 10)

def mbeir_headline_k(task_name: str) -> int:
    """The k a paper reports for ``<dataset>_task<k>``: 10 for Fashion200K and FashionIQ, else 5."""
    return 10 if task_name.lower() in _HEADLINE_AT_10 else 5


# ---------------------------------------------------------------------------------------------- MMEB v1
#: dataset -> meta-task. Keys are the MMEB-eval subset names.
MMEB_META_TASK: dict[str, str] = {
    **dict.fromkeys(
        ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365", "ImageNet-A", "ImageNet-R",
         "ObjectNet", "Country211"],
        "classification",
    ),
    **dict.fromkeys(
        ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA", "VizWiz", "GQA",
         "TextVQA"],
        "vqa",
    ),
    **dict.fromkeys(
        ["VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA",
         "OVEN", "FashionIQ", "EDIS", "Wiki-SS-NQ"],
        "retrieval",
    ),
    **dict.fromkeys(["MSCOCO", "Visual7W-Pointing", "RefCOCO", "RefCOCO-Matching"], "grounding"),
}

#: The 16 eval-only (out-of-distribution) datasets; the other 20 have training data (IND).
MMEB_OOD: frozenset[str] = frozenset(
    {"Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211", "ScienceQA", "VizWiz", "GQA", "TextVQA",
     "OVEN", "FashionIQ", "EDIS", "Wiki-SS-NQ", "Visual7W-Pointing", "RefCOCO", "RefCOCO-Matching"}
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_MMEB_BY_NORM = {_norm(k): k for k in MMEB_META_TASK}


def mmeb_dataset_info(name: str) -> tuple[str | None, str | None]:
    """``(meta_task, "IND"|"OOD")`` for an MMEB dataset name (tolerant to ``_``/``-``/case, e.g.
    ``ImageNet_1K``); ``(None, None)`` for a dataset that is not part of MMEB v1 (a user's own set)."""
    canon = _MMEB_BY_NORM.get(_norm(name))
    if canon is None:
        return None, None
    return MMEB_META_TASK[canon], ("OOD" if canon in MMEB_OOD else "IND")
