"""The backbones a P(True) reranker runs on: Qwen2-VL / Qwen2.5-VL and LLaVA-Next (MM-Embed's choice).

Each backend fixes the chat format, the image marker in the prompt, how images become features (HF's own
``get_image_features``, so a slot count always equals the feature count) and the position scheme.
"""

from __future__ import annotations

from typing import Any

import torch

from omniret.encoders.mllm import VISION_BLOCK
from omniret.rerank.mllm import BACKENDS, MLLMReranker, Vision


@BACKENDS.register("qwen2_vl", "Qwen2-VL chat template, M-RoPE positions")
class QwenVLReranker(MLLMReranker):
    """Qwen2-VL / Qwen2.5-VL: ``<|im_start|>`` chat turns, images as vision blocks, 3-D rotary positions."""

    model_types = ("qwen2_vl", "qwen2_5_vl")
    image_marker = VISION_BLOCK
    size_key = "image_grid_thw"
    chat_format = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{content}"
                   "<|im_end|>\n<|im_start|>assistant\n")

    def positions(self, ids: torch.Tensor, mask: torch.Tensor, grids: list[torch.Tensor | None]) -> torch.Tensor:
        present = [g for g in grids if g is not None]
        pos, _ = self.model.model.get_rope_index(
            input_ids=ids, mm_token_type_ids=(ids == self.image_token_id).to(torch.int32) * mask.to(torch.int32),
            image_grid_thw=torch.cat(present) if present else None, attention_mask=mask,
        )
        return pos

    def naive_kwargs(self, ids: torch.Tensor, vis: Vision) -> dict[str, Any]:
        # HF computes M-RoPE itself from the token types and grids: an independent check of positions()
        return {"mm_token_type_ids": (ids == self.image_token_id).to(torch.int32),
                "image_grid_thw": vis.inputs.get("image_grid_thw")}


BACKENDS.add("qwen2_5_vl", QwenVLReranker, "Qwen2.5-VL chat template, M-RoPE positions")


@BACKENDS.register("llava_next", "LLaVA-Next: '[INST] <image>\\n... [/INST]', any-resolution image tiles")
class LlavaNextReranker(MLLMReranker):
    """LLaVA-Next (the Mistral chat format of llava-v1.6-mistral by default; ``chat_format`` for others)."""

    model_types = ("llava_next",)
    image_marker = "<image>\n"
    chat_format = "[INST] {content} [/INST]"
    add_bos = True

