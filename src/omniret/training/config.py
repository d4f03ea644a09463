"""Typed training configuration, loaded from YAML with errors that name the offending key.

A config is one :class:`TrainConfig`; a multi-stage recipe (MM-Embed: in-batch -> modality-aware hard
negatives -> continual text fine-tuning) lists ``stages``, each overriding parts of the top-level sections::

    name: omniret-mini
    output_dir: runs/omniret-mini
    model: {family: omni-mini, lora: {r: 8, alpha: 64}}
    data: {sources: [{kind: mbeir, path: data/emoji, weight: 1.0}]}
    loss: {temperature: 0.05}
    optim: {lr: 1.0e-4, max_steps: 300, batch_size: 32}
    stages:
      - {name: rand}
      - {name: hard, init: base, mine: {...}, loss: {hard_negatives: 1}}
      - {name: text, init: previous, optim: {lr: 2.0e-5, max_steps: 100}}

Relative paths are resolved against the YAML file's directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniret.errors import ConfigError  # noqa: F401  (an invalid config: names the key and the problem)


@dataclass
class LoraConfig:
    """LoRA on the language model (defaults: MM-Embed's r=8, α=64, METHODS.md §2.4)."""

    r: int = 8
    alpha: int = 64
    dropout: float = 0.0
    #: module-name suffixes to adapt; null = the family's default (Mistral/Qwen: q/k/v/o/gate/up/down_proj,
    #: BERT: query/value, CLIP text: q/k/v/out_proj/fc1/fc2)
    target_modules: list[str] | None = None
    #: module prefix the targets live under; null = the family's language model ("" = anywhere)
    scope: str | None = None


@dataclass
class ModelConfig:
    family: str = "omni-mini"
    #: where weights start: None = the family's base model; a path = a saved omniret model or HF directory;
    #: ``tiny:<family>`` = a tiny random checkpoint built on the fly (smoke runs, see ``omniret models make-tiny``)
    init: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: LoRA on the language model (everything else frozen except the projector/heads); null = full fine-tuning
    lora: LoraConfig | None = None
    #: keep the vision tower frozen (the family says which parameters that is)
    freeze_vision: bool = True
    #: train the vision-language projector and pooling heads (also under LoRA)
    train_projector: bool = True
    gradient_checkpointing: bool = False
    #: save LoRA merged into the weights instead of as adapters (both reload with ``load_encoder``)
    merge_lora: bool = False
    #: freezing policy: fnmatch patterns over parameter names; ``trainable`` is applied after ``frozen``
    frozen: list[str] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)


@dataclass
class SourceConfig:
    """One training data source. ``kind``: ``mbeir`` (query file or split dir + pool), ``mmeb`` (rows JSONL),
    ``pairs`` (BEIR-style dir: queries.jsonl, corpus.jsonl, qrels/<split>.tsv)."""

    kind: str
    path: str
    weight: float = 1.0
    split: str = "train"
    #: mbeir: the candidate pool (default: cand_pool/global/mbeir_union_<split>_cand_pool.jsonl)
    pool: str | None = None
    #: mbeir: a query JSONL to use instead of query/<split>/*.jsonl (e.g. one written by ``omniret mine``)
    queries: str | None = None
    #: keep only these tasks (``<dataset>_task<k>``) for mbeir
    tasks: list[str] = field(default_factory=list)
    #: instruction for every query of this source (pairs/mmeb); mbeir uses the root's instruction TSV
    instruction: str | None = None
    #: mmeb: image directory the rows' paths are relative to
    image_root: str | None = None
    max_examples: int | None = None


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    #: "mixed": every example draws its source by weight; "homogeneous": one (source, task) per batch
    batching: str = "mixed"
    #: M-BEIR task instructions (:class:`omniret.data.mbeir.QueryInstructions`): "first" prompt, "random"
    #: (UniIR draws at random; seeded per query) or "none"
    instruction_choice: str = "first"


@dataclass
class LossConfig:
    """The objective: ``terms`` (see :mod:`omniret.losses.terms`), or, when ``terms`` is empty, one
    ``contrastive`` term built from ``temperature`` / ``learnable_temperature`` / ``symmetric``."""

    terms: list[dict[str, Any]] = field(default_factory=list)
    temperature: float = 0.05
    learnable_temperature: bool = False
    symmetric: bool = False
    #: explicit hard negatives per query (from ``neg_cand_list`` / ``neg_*`` fields); 0 = in-batch only
    hard_negatives: int = 0

    def term_specs(self) -> list[dict[str, Any]]:
        if self.terms:
            return [dict(t) for t in self.terms]
        return [{"name": "contrastive", "weight": 1.0, "temperature": self.temperature,
                 "learnable_temperature": self.learnable_temperature, "symmetric": self.symmetric}]


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"
    warmup_steps: int = 0
    max_steps: int = 100
    batch_size: int = 32
    #: GradCache chunk size (0 = off): encode the batch in chunks of this many items at flat memory
    gradcache_chunk: int = 0
    #: plain gradient accumulation: each step = this many batches, each with its own in-batch negatives
    accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "fp32"


@dataclass
class MineConfig:
    """Modality-aware hard-negative mining run before a stage (METHODS.md §2.5)."""

    #: which model mines: "previous" (the last stage's output), "stage:NAME" (an earlier stage's output) or a
    #: saved model path
    model: str = "previous"
    top_n: int = 50
    min_rank: int = 45
    count: int = 1
    #: "union", "wrong_modality" (C1 first) or "right_modality" (C2 first)
    mix: str = "union"
    seed: int = 0


@dataclass
class StageConfig:
    name: str
    #: "base" (family base model / model.init), "previous" (last stage's output) or a saved model path
    init: str = "previous"
    mine: MineConfig | None = None
    data: DataConfig | None = None
    loss: LossConfig | None = None
    optim: OptimConfig | None = None


@dataclass
class TrainConfig:
    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 0
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[StageConfig] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """Hash of the whole config (a resumed run must have the same one)."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> TrainConfig:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(self.device)):
            raise ConfigError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        for st in self.resolved_stages():
            _check_stage(st)
        return self

    def check_inputs(self) -> TrainConfig:
        """Check what the run will read — every data path and the model family's options — so a bad config
        fails before any model is loaded or anything is written to the run folder."""
        from omniret.training.preflight import check_inputs

        check_inputs(self)
        return self

    def resolved_stages(self) -> list[ResolvedStage]:
        """One :class:`ResolvedStage` per stage (a config without stages is one stage named ``main``)."""
        stages = self.stages or [StageConfig(name="main", init="base")]
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stages: duplicate stage names in {names}")
        return [
            ResolvedStage(
                name=s.name, index=i, init=s.init if i else ("base" if s.init == "previous" else s.init),
                mine=s.mine, data=s.data or self.data, loss=s.loss or self.loss, optim=s.optim or self.optim,
            )
            for i, s in enumerate(stages)
        ]


@dataclass
class ResolvedStage:
    name: str
    index: int
    init: str
    mine: MineConfig | None
    data: DataConfig
    loss: LossConfig
    optim: OptimConfig


def _check_stage(st: ResolvedStage) -> None:
    o, d, lo = st.optim, st.data, st.loss
    where = f"stage {st.name!r}"
    if o.schedule not in ("cosine", "linear", "constant"):
        raise ConfigError(f"{where}: optim.schedule must be cosine, linear or constant, got {o.schedule!r}")
    for key in ("max_steps", "batch_size", "accumulation_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(o, key) < 1:
            raise ConfigError(f"{where}: optim.{key} must be >= 1, got {getattr(o, key)}")
    if o.gradcache_chunk < 0 or o.warmup_steps < 0 or not o.lr > 0:
        raise ConfigError(f"{where}: optim.gradcache_chunk/warmup_steps must be >= 0 and lr > 0")
    if o.gradcache_chunk and o.accumulation_steps > 1:
        raise ConfigError(f"{where}: use either optim.gradcache_chunk or optim.accumulation_steps, not both")
    if o.precision not in ("fp32", "bf16"):
        raise ConfigError(f"{where}: optim.precision must be fp32 or bf16, got {o.precision!r}")
    if d.batching not in ("mixed", "homogeneous"):
        raise ConfigError(f"{where}: data.batching must be mixed or homogeneous, got {d.batching!r}")
    if d.instruction_choice not in ("first", "random", "none"):
        raise ConfigError(f"{where}: data.instruction_choice must be first, random or none, got {d.instruction_choice!r}")
    if not d.sources:
        raise ConfigError(f"{where}: data.sources is empty")
    for i, s in enumerate(d.sources):
        if s.kind not in ("mbeir", "mmeb", "pairs"):
            raise ConfigError(f"{where}: data.sources[{i}].kind must be mbeir, mmeb or pairs, got {s.kind!r}")
        if not s.weight > 0:
            raise ConfigError(f"{where}: data.sources[{i}].weight must be > 0, got {s.weight}")
    if lo.hard_negatives < 0 or not lo.temperature > 0:
        raise ConfigError(f"{where}: loss.hard_negatives must be >= 0 and loss.temperature > 0")
    from omniret.losses import build_loss
    from omniret.training import matching  # noqa: F401  (registers the 'match' loss term)

    loss = build_loss(lo.term_specs(), f"{where}: loss.terms")
    if o.gradcache_chunk and "forward" in loss.needs:
        names = [n for n, t in loss.terms.items() if t.needs == "forward"]
        raise ConfigError(f"{where}: loss term(s) {', '.join(names)} run their own forward pass over the whole "
                          f"batch and cannot work with GradCache; set optim.gradcache_chunk: 0")
    if st.mine is not None:
        m = st.mine
        if not 0 <= m.min_rank < m.top_n or m.count < 1 or m.mix not in ("union", "wrong_modality", "right_modality"):
            raise ConfigError(f"{where}: mine needs 0 <= min_rank < top_n, count >= 1, mix in union/wrong_modality/right_modality")


# ------------------------------------------------------------------------------------------ YAML -> dataclasses


def _build(cls: type, raw: Any, where: str, base: Path) -> Any:
    """Recursively build dataclass ``cls`` from ``raw``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    kwargs = {k: _value(hints[k], v, f"{where}.{k}", base) for k, v in raw.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    return obj


def _value(tp: Any, v: Any, where: str, base: Path) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if v is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: may not be null")
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], v, where, base)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where, base)
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(f"{where}: expected a list, got {type(v).__name__}")
        return [_value(args[0], x, f"{where}[{i}]", base) for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(v).__name__}")
        return dict(v)
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if tp is Any:
        return v
    if tp in (int, str, bool) and not (isinstance(v, tp) and (tp is bool or not isinstance(v, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {v!r}")
    if tp is float:
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    return v


_PATH_KEYS = {("output_dir",), ("model", "init"), ("path",), ("pool",), ("queries",), ("image_root",)}


def _resolve_paths(obj: Any, base: Path) -> None:
    """Make relative path fields absolute against ``base`` (the config file's directory)."""

    def fix(v: str | None) -> str | None:
        if v is None or v in ("base", "previous") or v.startswith(("stage:", "tiny:")) or os.path.isabs(v):
            return v
        return str((base / v).resolve())

    obj.output_dir = fix(obj.output_dir)
    obj.model.init = fix(obj.model.init)
    datas = [obj.data] + [s.data for s in obj.stages if s.data is not None]
    for d in datas:
        for s in d.sources:
            s.path, s.pool, s.queries, s.image_root = fix(s.path), fix(s.pool), fix(s.queries), fix(s.image_root)
    for s in obj.stages:
        s.init = fix(s.init)
        if s.mine is not None:
            s.mine.model = fix(s.mine.model)


def config_from_dict(raw: dict[str, Any], base: str | os.PathLike = ".", where: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a plain mapping (paths resolved against ``base``)."""
    cfg = _build(TrainConfig, raw, where, Path(base))
    _resolve_paths(cfg, Path(base).resolve())
    return cfg.validate()


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML training config; every problem is a :class:`ConfigError` naming file and key."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    return config_from_dict(raw or {}, p.parent, where=str(p))


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    import yaml

    from omniret.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
