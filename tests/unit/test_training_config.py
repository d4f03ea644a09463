"""Training config loading (clear errors), LR schedule, sampler determinism and freezing policy."""

import json

import pytest
import torch
import yaml
from torch import nn

from omniret.encoders.base import Encoder
from omniret.training.config import ConfigError, LoraConfig, ModelConfig, SourceConfig, load_config
from omniret.training.data import Example, MixtureSampler, Source, pairs_examples
from omniret.training.lora import apply_policy
from omniret.training.trainer import lr_lambda
from omniret.types import Item

BASE = {"data": {"sources": [{"kind": "pairs", "path": "pairs"}]}}


def _load(tmp_path, raw):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(raw))
    return load_config(f)


def test_defaults_paths_and_stages(tmp_path):
    raw = {**BASE, "output_dir": "out", "optim": {"lr": 1, "max_steps": 5},
           "stages": [{"name": "rand"}, {"name": "hard", "init": "base", "loss": {"hard_negatives": 1},
                                          "mine": {"top_n": 10, "min_rank": 5}},
                      {"name": "text", "optim": {"lr": 2.0e-5, "max_steps": 3}}]}
    cfg = _load(tmp_path, raw)
    assert cfg.output_dir == str(tmp_path / "out")
    assert cfg.data.sources[0].path == str(tmp_path / "pairs")
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    st = cfg.resolved_stages()
    assert [s.name for s in st] == ["rand", "hard", "text"]
    assert [s.init for s in st] == ["base", "base", "previous"]
    assert st[1].loss.hard_negatives == 1 and st[0].loss.hard_negatives == 0
    assert st[2].optim.max_steps == 3 and st[1].optim.max_steps == 5
    assert st[1].mine.top_n == 10 and st[1].mine.min_rank == 5
    assert cfg.digest() == _load(tmp_path, raw).digest()


@pytest.mark.parametrize("raw, msg", [
    ({**BASE, "optimm": {}}, "unknown key(s) optimm"),
    ({**BASE, "optim": {"lr": "fast"}}, "optim.lr: expected a number"),
    ({**BASE, "optim": {"max_steps": 0}}, "optim.max_steps must be >= 1"),
    ({**BASE, "optim": {"schedule": "step"}}, "optim.schedule"),
    ({**BASE, "optim": {"gradcache_chunk": 4, "accumulation_steps": 2}}, "not both"),
    ({"data": {"sources": [{"kind": "csv", "path": "x"}]}}, "kind must be"),
    ({"data": {"sources": []}}, "data.sources is empty"),
    ({**BASE, "model": {"lora": {"rank": 3}}}, "model.lora: unknown key(s) rank"),
    ({**BASE, "stages": [{"name": "a"}, {"name": "a"}]}, "duplicate stage names"),
    ({**BASE, "stages": [{"name": "a", "mine": {"top_n": 5, "min_rank": 5}}]}, "min_rank < top_n"),
])
def test_invalid_configs_name_the_key(tmp_path, raw, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, raw)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "nope.yaml")


def test_lr_schedules():
    cos = lr_lambda("cosine", 2, 10)
    assert [cos(0), cos(1)] == [0.5, 1.0]
    assert cos(2) == pytest.approx(1.0) and cos(6) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    lin = lr_lambda("linear", 0, 4)
    assert [lin(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_lambda("constant", 1, 9)(5) == 1.0


def _sources():
    a = {"t1": [Example(Item(f"a{i}"), [Item(f"pa{i}")], [Item(f"na{i}")]) for i in range(5)],
         "t2": [Example(Item(f"b{i}"), [Item(f"pb{i}")]) for i in range(3)]}
    c = {"c": [Example(Item(f"c{i}"), [Item(f"pc{i}")]) for i in range(4)]}
    return [Source("0:a", 3.0, a), Source("1:c", 1.0, c)]


def test_sampler_epochs_homogeneous_and_resume():
    s = MixtureSampler(_sources(), batch_size=4, batching="homogeneous", hard_negatives=1, seed=1)
    batches = [s.next_batch() for _ in range(6)]
    for b in batches:  # one task per batch
        assert len({q.text[0] for q in b.queries}) == 1
        assert len(b.negatives) == 4
    # a query of t1 gets its own negative; others borrow another query's positive
    for b in batches:
        for q, n in zip(b.queries, b.negatives, strict=True):
            if q.text.startswith("a"):
                assert n.text == "n" + q.text
            else:
                assert n.text.startswith("p") and n.text[1:] != q.text
    # resuming from a copy of the state gives the same following batches
    s2 = MixtureSampler(_sources(), batch_size=4, batching="homogeneous", hard_negatives=1, seed=1)
    for _ in range(3):
        s2.next_batch()
    s3 = MixtureSampler(_sources(), batch_size=4, batching="homogeneous", hard_negatives=1, seed=1)
    s3.state = json.loads(json.dumps(s2.state))
    for b in batches[3:]:
        assert [q.text for q in s3.next_batch().queries] == [q.text for q in b.queries]


def test_sampler_mixed_weights_and_epoch_coverage():
    s = MixtureSampler(_sources(), batch_size=8, batching="mixed", seed=0)
    seen = [q.text for _ in range(200) for q in s.next_batch().queries]
    share_a = sum(t[0] in "ab" for t in seen) / len(seen)
    assert share_a == pytest.approx(0.75, abs=0.03)
    # each stream walks a permutation: the first 8 draws of source 0 cover all 8 of its examples
    a_draws = [t for t in seen if t[0] in "ab"][:8]
    assert sorted(a_draws) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)])


def test_pairs_source_reads_graded_qrels(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    ex = pairs_examples(SourceConfig(kind="pairs", path=str(tmp_path), instruction="Find it."))
    (only,) = ex[tmp_path.name]
    assert only.query.instruction == "Find it." and only.query.text == "first"
    assert [p.text for p in only.positives] == ["one"] and [n.text for n in only.negatives] == ["two"]


class _Toy(Encoder):
    """The training contract of a toy network: a vision layer, a projector and a one-layer "language model"."""

    def __init__(self):
        self.net = nn.Module()
        self.net.vision, self.net.projector, self.net.query = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def prepare(self, items, *, is_query):
        raise NotImplementedError

    def forward(self, batch):
        raise NotImplementedError

    def trainable_parts(self):
        return {"net": self.net}

    def param_roles(self):
        return {"vision": ["vision.*"], "projector": ["projector.*"], "unused": []}

    def lora_scope(self):
        return "", ["query"]


def test_freezing_policy_and_lora():
    e = _Toy()
    counts = apply_policy(e, ModelConfig())  # full fine-tuning; the vision tower frozen by default
    assert not e.net.vision.weight.requires_grad and e.net.projector.weight.requires_grad
    assert counts == {"trainable": 40, "total": 60}
    e = _Toy()
    assert apply_policy(e, ModelConfig(freeze_vision=False, frozen=["query.*"])) == {"trainable": 40, "total": 60}
    assert e.net.vision.weight.requires_grad and not e.net.query.weight.requires_grad
    e = _Toy()
    counts = apply_policy(e, ModelConfig(lora=LoraConfig(r=2, alpha=4)))  # the family's LoRA targets
    names = {n for n, p in e.net.named_parameters() if p.requires_grad}
    assert names == {"projector.weight", "projector.bias", "query.lora_A.default.weight", "query.lora_B.default.weight"}
    e = _Toy()
    apply_policy(e, ModelConfig(lora=LoraConfig(r=2, alpha=4), train_projector=False, trainable=["vision.bias"]))
    names = {n for n, p in e.net.named_parameters() if p.requires_grad}
    assert names == {"vision.bias", "query.lora_A.default.weight", "query.lora_B.default.weight"}
    with pytest.raises(Exception, match="matches no parameter"):
        apply_policy(_Toy(), ModelConfig(frozen=["nothing.*"]))
    with pytest.raises(Exception, match="match no linear layer"):
        apply_policy(_Toy(), ModelConfig(lora=LoraConfig(target_modules=["q_proj"])))
    with pytest.raises(Exception, match="no trainable parameter"):
        apply_policy(_Toy(), ModelConfig(frozen=["*"]))
    assert torch.is_grad_enabled()
