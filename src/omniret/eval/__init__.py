"""Evaluation: pure metrics, benchmark facts, runners for M-BEIR / MMEB / BEIR, and reports."""

from omniret.eval.metrics import (
    hit_at_k,
    mean_hit_at_k,
    modality_accuracy_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)

__all__ = ["hit_at_k", "mean_hit_at_k", "modality_accuracy_at_k", "mrr_at_k", "ndcg_at_k", "recall_at_k"]
