"""Padding-free BERT inference: the token-wise layers run on the real tokens only.

A batch padded to its longest row wastes compute in every linear layer, and linear layers are most of a small
BERT's cost (MiniLM-L6: 6 of its 7 matrix products per token). Short search queries vary from ~4 to ~12 tokens, so
a micro-batch of 32 of them is ~40 % padding. Here the hidden states are kept *packed* — ``(T, H)`` for the
``T`` real tokens — through the projections, feed-forward layers and layer norms, and scattered to ``(B, L)``
only for the attention product itself (the one step that mixes tokens), the idea behind "unpadded" BERT
kernels (Zeng et al., ByteTransformer, arXiv 2210.03052, Sec. 3). Every weight-holding submodule is still
called as a module, so LoRA-wrapped layers behave as in the padded model.

Inference only: dropout is skipped, so :func:`packed_bert_hidden` refuses a model in training mode. It equals
HF's padded forward at the real positions to float rounding (tests/unit/test_packed_bert.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from omniret.errors import OmniretError


def packed_bert_hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states ``(B, L, H)`` of a HF ``BertModel`` for right-padded ``input_ids`` ``(B, L)``; padding
    positions hold zeros (the caller pools over real tokens only)."""
    if model.training:
        raise OmniretError("packed BERT forward is for inference: call model.eval() first (it skips dropout)")
    b, length = input_ids.shape
    emb = model.embeddings(input_ids=input_ids)  # (B, L, H): word + position + token-type, LayerNorm
    h = emb.shape[-1]
    flat_keep = attention_mask.reshape(-1).bool()
    idx = flat_keep.nonzero().squeeze(1)  # (T,) positions of real tokens in the flattened (B*L) grid
    x = emb.reshape(b * length, h).index_select(0, idx)  # (T, H)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L): which keys each query may attend to
    # back to the grid by a row gather, not a scatter: grid row i takes packed row src[i], padding takes an
    # appended zero row (index T). Exported to ONNX, index_copy_ becomes an element-wise ScatterElements that
    # cost ~16 % of a batch's time; a row Gather costs about nothing.
    src = torch.where(flat_keep, flat_keep.long().cumsum(0) - 1, idx.shape[0])  # (B*L,)

    def grid(t: torch.Tensor) -> torch.Tensor:  # (T, C) -> (B*L, C), zeros at padding
        return torch.cat([t, t.new_zeros(1, t.shape[-1])]).index_select(0, src)

    def padded(t: torch.Tensor, heads: int) -> torch.Tensor:  # (T, H) -> (B, heads, L, H / heads)
        return grid(t).view(b, length, heads, -1).transpose(1, 2)

    for layer in model.encoder.layer:
        sa = layer.attention.self
        n = sa.num_attention_heads
        q, k, v = padded(sa.query(x), n), padded(sa.key(x), n), padded(sa.value(x), n)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, scale=sa.scaling)  # (B, n, L, d)
        ctx = ctx.transpose(1, 2).reshape(b * length, h).index_select(0, idx)  # back to (T, H)
        out = layer.attention.output
        x = out.LayerNorm(out.dense(ctx) + x)
        x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)
    return grid(x).view(b, length, h)
