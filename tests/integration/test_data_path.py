"""One M-BEIR data path: indexing a pool file, evaluation, training and mining build the very same Items —
UniIR's text formatting, the same instruction, ``neg_cand_list`` kept — pinned as exact strings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from _eval_helpers import ColourEncoder
from PIL import Image

from omniret.data.corpus import load_corpus, load_jsonl
from omniret.data.mbeir import QueryInstructions, format_string, read_queries
from omniret.errors import DataError
from omniret.eval.runner import MBeirOptions, evaluate_mbeir
from omniret.training.config import MineConfig, SourceConfig
from omniret.training.data import mbeir_examples
from omniret.training.mining import mine_source

POOL = [
    {"did": "7:0", "txt": None, "img_path": "images/red.png", "modality": "image"},
    {"did": "7:1", "txt": '  "a red ball" ', "img_path": None, "modality": "text"},
    {"did": "7:2", "txt": "is the sky blue?", "img_path": None, "modality": "text"},
    {"did": "7:3", "txt": "a yellow kite\r", "img_path": "images/yellow.png", "modality": "image,text"},
]
QUERIES = {
    0: {"qid": "7:10", "query_txt": "red circle", "query_img_path": None, "query_modality": "text",
        "pos_cand_list": ["7:0"], "neg_cand_list": ["7:3"], "task_id": 0},
    3: {"qid": "7:11", "query_txt": None, "query_img_path": "images/red.png", "query_modality": "image",
        "pos_cand_list": ["7:1"], "neg_cand_list": ["7:2"], "task_id": 3},
}
TSV = ("query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\n"
       "text\timage\ttoy\t7\tfind an image of this colour\tshow me a picture of it\n"
       "image\ttext\ttoy\t7\twrite a caption for the picture\t\n")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("toy").resolve()
    (r / "images").mkdir()
    for name, rgb in (("red", (220, 20, 20)), ("yellow", (230, 230, 20))):
        Image.new("RGB", (8, 8), rgb).save(r / "images" / f"{name}.png")
    for split in ("test", "train"):
        _jsonl(r / f"cand_pool/global/mbeir_union_{split}_cand_pool.jsonl", POOL)
        for task, q in QUERIES.items():
            _jsonl(r / f"query/{split}/mbeir_toy_task{task}_{split}.jsonl", [q])
            (r / f"qrels/{split}").mkdir(parents=True, exist_ok=True)
            (r / f"qrels/{split}/mbeir_toy_task{task}_{split}_qrels.txt").write_text(
                f"{q['qid']} 0 {q['pos_cand_list'][0]} 1 {task}\n")
    (r / "instructions").mkdir()
    (r / "instructions/query_instructions.tsv").write_text(TSV)
    return r


def sig(item) -> tuple:
    """What an encoder sees of an Item: id, text parts, image files, instruction."""
    return item.id, tuple(item.texts), tuple(p.path for p in item.images), item.instruction


def expected_docs(root: Path) -> dict[str, tuple]:
    img = str(root / "images" / "red.png"), str(root / "images" / "yellow.png")
    return {
        "7:0": ("7:0", (), (img[0],), None),
        "7:1": ("7:1", ("A red ball.",), (), None),
        "7:2": ("7:2", ("Is the sky blue?",), (), None),
        "7:3": ("7:3", ("A yellow kite.",), (img[1],), None),
    }


def expected_queries(root: Path) -> dict[str, tuple]:
    return {
        "7:10": ("7:10", ("Red circle.",), (), "Find an image of this colour."),
        "7:11": ("7:11", (), (str(root / "images" / "red.png"),), "Write a caption for the picture."),
    }


class Recorder(ColourEncoder):
    """A real encoder that also keeps every Item it was asked to encode."""

    def __init__(self) -> None:
        self.queries: dict[str, tuple] = {}
        self.docs: dict[str, tuple] = {}

    def encode_queries(self, items, *args, **kwargs):
        self.queries.update({it.id: sig(it) for it in items})
        return super().encode_queries(items, *args, **kwargs)

    def encode_documents(self, items, *args, **kwargs):
        self.docs.update({it.id: sig(it) for it in items})
        return super().encode_documents(items, *args, **kwargs)


def test_index_formats_a_pool_file_like_eval(root):
    pool = root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    assert {it.id: sig(it) for it in load_jsonl(pool, image_root=root)} == expected_docs(root)
    # the CLI/Retriever entry point takes the same path (images relative to the file's directory there)
    items, _ = load_corpus(_jsonl(root / "flat.jsonl", [POOL[1], POOL[2]]))
    assert [it.texts for it in items] == [["A red ball."], ["Is the sky blue?"]]


def test_eval_training_and_mining_build_identical_items(root, tmp_path):
    enc = Recorder()
    evaluate_mbeir(root, enc, MBeirOptions(pools=("global",), cache_dir=None))
    assert enc.docs == expected_docs(root)
    assert enc.queries == expected_queries(root)

    examples = mbeir_examples(SourceConfig(kind="mbeir", path=str(root), split="train"))
    assert sorted(examples) == ["toy_task0", "toy_task3"]
    (ex0,), (ex3,) = examples["toy_task0"], examples["toy_task3"]
    docs = expected_docs(root)
    assert sig(ex0.query) == expected_queries(root)["7:10"] and sig(ex3.query) == expected_queries(root)["7:11"]
    assert [sig(p) for p in ex0.positives] == [docs["7:0"]] and [sig(n) for n in ex0.negatives] == [docs["7:3"]]
    assert [sig(n) for n in ex3.negatives] == [docs["7:2"]]  # neg_cand_list kept on the record

    miner = Recorder()
    src = SourceConfig(kind="mbeir", path=str(root), split="train")
    mine_source(miner, src, tmp_path / "mined", MineConfig(top_n=4, min_rank=1, count=1, mix="wrong_modality"))
    assert miner.docs == expected_docs(root) and miner.queries == expected_queries(root)
    mined = read_queries(tmp_path / "mined" / "mbeir_toy_task0_train.jsonl")
    assert len(mined[0].neg) == 1 and mined[0].pos == ("7:0",) and mined[0].task_id == 0


def test_random_instructions_agree_across_consumers(root, tmp_path):
    (rec,) = read_queries(root / "query/train/mbeir_toy_task0_train.jsonl")
    pick = QueryInstructions(root, "random", seed=5)(rec, "image")
    options = ["find an image of this colour", "show me a picture of it"]
    assert pick == format_string(random.Random("5:7:10").choice(options))
    examples = mbeir_examples(SourceConfig(kind="mbeir", path=str(root), split="train"), "random", seed=5)
    assert examples["toy_task0"][0].query.instruction == pick
    enc = Recorder()
    evaluate_mbeir(root, enc, MBeirOptions(pools=("global",), cache_dir=None, instruction_mode="random", seed=5))
    assert enc.queries["7:10"][3] == pick


def test_instruction_lookup_fallback_and_errors(root, tmp_path):
    (rec,) = read_queries(root / "query/train/mbeir_toy_task3_train.jsonl")
    inst = QueryInstructions(root)
    assert inst(rec) == "Write a caption for the picture."  # positive unknown -> the task id's target modality
    assert QueryInstructions(root, "none")(rec, "text") is None
    with pytest.raises(DataError, match="no instruction for dataset_id 7, image -> image"):
        inst(rec, "image")
    with pytest.raises(DataError, match="no instructions file"):
        QueryInstructions(tmp_path)
    with pytest.raises(DataError, match="instruction mode must be one of"):
        QueryInstructions(root, "first")
