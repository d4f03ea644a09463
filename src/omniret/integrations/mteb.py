"""Score any omniret encoder with ``mteb.evaluate`` on text and image (Any2Any) tasks.

    import mteb
    from omniret.integrations.mteb import MTEBEncoder
    model = MTEBEncoder("default")
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]), cache=None)

MTEB hands the encoder DataLoaders of batches (``{"text": [...], "image": [PIL, ...]}``, either or both)
and says whether they are queries or documents. Each row becomes an :class:`omniret.Item`; queries get
the task's instruction (from ``instructions`` by task name, else the task metadata's own prompt) as
``Item.instruction`` so the encoder family applies its own template; documents get none. Embeddings come
back L2-normalised, so MTEB's cosine similarity equals omniret's inner product.

Needs the ``mteb`` extra (``pip install 'omniret[mteb]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from omniret.encoders import Encoder, load_encoder
from omniret.errors import OmniretError
from omniret.types import Item

try:
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise OmniretError("omniret.integrations.mteb needs mteb: pip install 'omniret[mteb]'") from e


def _rows(batch: Mapping[str, Any]) -> list[Item]:
    """One MTEB batch -> Items (image first, then text, as everywhere in omniret)."""
    texts = batch.get("text")
    images = batch.get("image")
    n = len(texts) if texts is not None else len(images) if images is not None else 0
    if n == 0:
        raise OmniretError(f"MTEB batch has neither 'text' nor 'image' (keys: {', '.join(batch)})")
    out = []
    for i in range(n):
        txt = texts[i] if texts is not None else None
        img = images[i] if images is not None else None
        out.append(Item(txt if txt else None, image=img))
    return out


class MTEBEncoder(AbsEncoder):
    """An MTEB ``EncoderProtocol`` around an omniret :class:`~omniret.encoders.Encoder`.

    Args:
        encoder: an Encoder, or a name/path for :func:`omniret.load_encoder`.
        instructions: optional ``{task name: query instruction}``; overrides the task's own prompt.
        batch_size: default encoding batch size (MTEB's ``encode_kwargs["batch_size"]`` wins).
        use_task_prompt: pass the task metadata's prompt as the query instruction when ``instructions``
            has none for the task.
    """

    def __init__(
        self,
        encoder: Encoder | str = "default",
        instructions: Mapping[str, str] | None = None,
        batch_size: int = 32,
        use_task_prompt: bool = True,
        **load_options: Any,
    ) -> None:
        self.model = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, **load_options)
        self.instructions = dict(instructions or {})
        self.batch_size = batch_size
        self.use_task_prompt = use_task_prompt
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=f"omniret/{self.model.name}",
            revision=self.model.recipe_hash,
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=self.model.dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            similarity_fn_name=ScoringFunction.COSINE,
            use_instructions=True,
            training_datasets=None,
            modalities=["text", "image"],
        )

    def query_instruction(self, task_metadata: Any) -> str | None:
        """The instruction for this task's queries: explicit mapping first, then the task's own prompt."""
        if task_metadata.name in self.instructions:
            return self.instructions[task_metadata.name]
        if not self.use_task_prompt:
            return None
        prompt = task_metadata.prompt
        if isinstance(prompt, dict):
            prompt = prompt.get(PromptType.query.value)
        return prompt or None

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every batch of ``inputs``; returns ``(N, dim)`` float32, rows L2-normalised."""
        items = [it for batch in inputs for it in _rows(batch)]
        bs = int(kwargs.get("batch_size") or self.batch_size)
        progress = bool(kwargs.get("show_progress_bar", False))
        if prompt_type == PromptType.query:
            inst = self.query_instruction(task_metadata)
            return self.model.encode_queries(items, instruction=inst, batch_size=bs, progress=progress)
        # documents, and symmetric tasks (STS, clustering: prompt_type None) get plain document formatting
        return self.model.encode_documents(items, batch_size=bs, progress=progress)
