"""Second-stage reranking: the :class:`Reranker` protocol and zero-shot MLLM P(True) rerankers.

>>> from omniret.rerank import load_reranker
>>> rr = load_reranker("path/to/llava-next-or-qwen2-vl")       # HF-layout directory
>>> hits = rr.rerank(Item("a red car"), hits, k=10)             # top 10 reordered by P(True)
"""

from omniret.rerank.base import Reranker, ScoringReranker, check_k, hit_item, item_hit, reorder
from omniret.rerank.templates import MBEIR_TASK_TEMPLATES, TEMPLATES, RerankTemplate, resolve_template


def load_reranker(name_or_path, **options):  # noqa: ANN001, ANN201 - thin lazy wrapper (keeps torch out of import)
    """See :func:`omniret.rerank.mllm.load_reranker`."""
    from omniret.rerank.mllm import load_reranker as _load

    return _load(name_or_path, **options)


__all__ = ["Reranker", "ScoringReranker", "RerankTemplate", "TEMPLATES", "MBEIR_TASK_TEMPLATES", "check_k",
           "hit_item", "item_hit", "load_reranker", "reorder", "resolve_template"]
