"""The padding-free BERT forward equals HF's padded forward at every real token, and the bundled text tower
uses it only for inference."""

from __future__ import annotations

import pytest
import torch

from omniret.encoders.packed import packed_bert_hidden
from omniret.errors import OmniretError


def _tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=40, max_position_embeddings=32, attn_implementation="sdpa")
    return BertModel(cfg).eval()


def _batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 50, (n,))
        mask[i, :n] = 1
    return ids, mask


def test_packed_equals_padded_hf_forward_at_real_tokens():
    torch.set_num_threads(1)
    model = _tiny_bert()
    ids, mask = _batch([9, 3, 6, 9, 2])
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = packed_bert_hidden(model, ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(got[~keep]) == 0
    # each row alone (no padding at all) gives the same states: the batch does not leak between rows
    for i in range(len(ids)):
        n = int(mask[i].sum())
        with torch.inference_mode():
            alone = model(input_ids=ids[i : i + 1, :n]).last_hidden_state[0]
        torch.testing.assert_close(got[i, :n], alone, atol=1e-5, rtol=1e-5)


def test_packed_refuses_training_mode():
    model = _tiny_bert().train()
    ids, mask = _batch([3, 2])
    with pytest.raises(OmniretError, match="inference"):
        packed_bert_hidden(model, ids, mask)


def test_text_tower_packs_only_without_gradients():
    from omniret.encoders.minilm import MiniLMTextTower

    tower = MiniLMTextTower()
    batch = tower.tokenize(["a red apple on a wooden table", "moon"], ["find a photo", None])
    with torch.inference_mode():
        fast = tower.embed(batch)
    slow = tower.embed(batch)  # gradients enabled: HF's own padded forward (training's path)
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=1e-5)
