"""M-BEIR / MMEB / BEIR readers: formats as documented, and every malformed input named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniret.data.beir import load_beir
from omniret.data.mbeir import (
    discover_tasks,
    format_string,
    global_pool_file,
    parse_query_filename,
    read_instructions,
    read_pool,
    read_queries,
)
from omniret.data.mmeb import dataset_files, read_eval, read_train, strip_placeholder
from omniret.data.qrels import read_qrels
from omniret.errors import DataError
from omniret.eval.benchmarks import mbeir_headline_k, mmeb_dataset_info, target_modality


def _w(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _rows(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_format_string_matches_uniir():
    assert format_string('  "a dog on grass"\r ') == "A dog on grass."
    assert format_string("is it red?") == "Is it red?"
    assert format_string("") == "" and format_string(None) == ""


def test_query_filename_and_benchmark_facts():
    assert parse_query_filename("mbeir_fashioniq_task7_test.jsonl") == ("fashioniq", 7, "test")
    assert parse_query_filename("mbeir_union_up_train.jsonl") is None
    assert mbeir_headline_k("fashioniq_task7") == 10 and mbeir_headline_k("mscoco_task0") == 5
    assert target_modality(2) == "image,text"
    assert mmeb_dataset_info("ImageNet_1K") == ("classification", "IND")
    assert mmeb_dataset_info("RefCOCO") == ("grounding", "OOD")
    assert mmeb_dataset_info("my_set") == (None, None)


def test_mbeir_records(tmp_path):
    q = _w(tmp_path / "q.jsonl", _rows(
        {"qid": "9:1", "query_txt": "a dog", "query_img_path": None, "query_modality": "text",
         "pos_cand_list": ["9:5"]},
        {"qid": "9:2", "query_txt": "make it red", "query_img_path": "x.jpg", "query_modality": "image,text",
         "pos_cand_list": ["9:6"]},
    ))
    recs = read_queries(q)
    assert recs[0].dataset_id == "9" and recs[1].pos == ("9:6",)
    item = recs[1].to_item(tmp_path, instruction="Find it.")
    assert item.modality == "image,text" and item.text == "Make it red." and item.instruction == "Find it."
    assert item.images[0].path == str(tmp_path / "x.jpg")


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"txt": "a", "modality": "text"}', "missing required field 'did'"),
        ('{"did": "1:1", "txt": "a", "modality": "audio"}', "modality must be one of"),
        ('{"did": "1:1", "txt": null, "img_path": null, "modality": "image"}', "lacks its image"),
        ('{"did": [5], "txt": "a", "modality": "text"}', "field 'did' must be str/int"),
    ],
)
def test_malformed_pool_row_names_file_and_line(tmp_path, line, msg):
    p = _w(tmp_path / "pool.jsonl", '{"did": "1:0", "txt": "ok", "modality": "text"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=msg) as e:
        read_pool(p)
    assert f"{p}:3" in str(e.value)


def test_duplicate_did(tmp_path):
    row = {"did": "1:0", "txt": "ok", "modality": "text"}
    with pytest.raises(DataError, match="duplicate did"):
        read_pool(_w(tmp_path / "p.jsonl", _rows(row, row)))


def test_qrels(tmp_path):
    q = read_qrels(_w(tmp_path / "q.txt", "9:1 0 9:5 1 0\n9:1 0 9:7 1 0\n9:2 0 9:6 0 3\n"))
    assert q.rel == {"9:1": {"9:5": 1, "9:7": 1}} and q.task_of == {"9:1": 0}
    with pytest.raises(DataError, match=r"q2.txt:2: expected 5 fields"):
        read_qrels(_w(tmp_path / "q2.txt", "9:1 0 9:5 1 0\n9:1 9:5 1\n"))
    with pytest.raises(DataError, match=r"q3.txt:1: relevance and task_id must be integers"):
        read_qrels(_w(tmp_path / "q3.txt", "9:1 0 9:5 yes 0\n"))


def test_one_qrels_reader_for_every_layout(tmp_path):
    beir = _w(tmp_path / "b.tsv", "query-id\tcorpus-id\tscore\nq 1\td 1\t2\nq 1\td2\t0\nq2\td3\t1.0\n")
    assert read_qrels(beir).rel == {"q 1": {"d 1": 2}, "q2": {"d3": 1}}  # tab-separated ids may hold spaces
    assert read_qrels(beir, keep_nonrelevant=True).rel == {"q 1": {"d 1": 2, "d2": 0}, "q2": {"d3": 1}}
    trec = read_qrels(_w(tmp_path / "t.txt", "q1 0 d1 1\nq1 Q0 d2 0\n"), keep_nonrelevant=True)
    assert trec.rel == {"q1": {"d1": 1, "d2": 0}} and trec.task_of == {}
    with pytest.raises(DataError, match=r"x.txt:1: expected"):
        read_qrels(_w(tmp_path / "x.txt", "a b c d e f\n"))
    with pytest.raises(DataError, match="no such qrels file"):
        read_qrels(tmp_path / "missing.txt")


def test_instructions(tmp_path):
    tsv = _w(tmp_path / "i.tsv", "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\n"
                                 "text\timage\tmscoco\t9\tFind me an image.\t\n")
    assert read_instructions(tsv) == {("9", "text", "image"): ["Find me an image."]}
    with pytest.raises(DataError, match=r"i2.tsv:2"):
        read_instructions(_w(tmp_path / "i2.tsv", "header\ntext\timage\n"))


def test_discover_tasks_and_pools(tmp_path):
    _w(tmp_path / "query/test/mbeir_mscoco_task0_test.jsonl", "")
    _w(tmp_path / "query/test/mbeir_nights_task4_test.jsonl", "")
    _w(tmp_path / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl", "")
    _w(tmp_path / "cand_pool/local/mbeir_nights_task4_cand_pool.jsonl", "")
    _w(tmp_path / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", "")
    tasks = discover_tasks(tmp_path)
    assert [t.name for t in tasks] == ["mscoco_task0", "nights_task4"]
    assert tasks[0].local_pool_file.name == "mbeir_mscoco_task0_test_cand_pool.jsonl"  # MSCOCO's split pools
    assert tasks[1].qrels_file == tmp_path / "qrels/test/mbeir_nights_task4_test_qrels.txt"
    assert global_pool_file(tmp_path).name == "mbeir_union_test_cand_pool.jsonl"
    with pytest.raises(DataError, match="unknown task"):
        discover_tasks(tmp_path, names=["cirr_task7"])
    with pytest.raises(DataError, match="no query/val"):
        discover_tasks(tmp_path, split="val")


def test_beir(tmp_path):
    _w(tmp_path / "corpus.jsonl", _rows({"_id": "d1", "title": "Dog", "text": "a barking animal"},
                                        {"_id": "d2", "title": "", "text": "a feline"}))
    _w(tmp_path / "queries.jsonl", _rows({"_id": "q1", "text": "what barks"}, {"_id": "q2", "text": "unjudged"}))
    _w(tmp_path / "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    data = load_beir(tmp_path)
    assert data.corpus == {"d1": "Dog a barking animal", "d2": "a feline"}
    assert data.qrels == {"q1": {"d1": 1}}
    assert data.query_items()[0] == ["q1"]
    _w(tmp_path / "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(DataError, match="'d9'.*not in corpus"):
        load_beir(tmp_path)


def test_mmeb_eval_v1_and_v2(tmp_path):
    _w(tmp_path / "ImageNet-1K.jsonl", _rows(
        {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "a.jpg",
         "tgt_text": ["cat", "dog"], "tgt_img_path": ["", ""]},
    ))
    _w(tmp_path / "CIRR.jsonl", _rows(
        {"qry_inst": "Given an image, find a modified image.", "qry_text": "make it blue", "qry_img_path": "b.jpg",
         "tgt_inst": "Represent the given image.", "tgt_text": [""], "tgt_img_path": ["c.jpg", "d.jpg"]},
    ))
    files = dataset_files(tmp_path)
    assert sorted(files) == ["CIRR", "ImageNet-1K"]
    (row,) = read_eval(files["ImageNet-1K"], tmp_path)
    assert row.query.text == "Represent the given image for classification" and row.query.instruction is None
    assert [c.text for c in row.candidates] == ["cat", "dog"] and row.candidates[0].modality == "text"
    (row,) = read_eval(files["CIRR"], tmp_path)
    assert row.query.instruction == "Given an image, find a modified image." and row.query.modality == "image,text"
    assert [c.modality for c in row.candidates] == ["image", "image"]
    assert row.candidates[1].instruction == "Represent the given image."
    _w(tmp_path / "bad.jsonl", _rows({"qry_text": "x", "tgt_text": []}))
    with pytest.raises(DataError, match=r"bad.jsonl:1: no candidates"):
        read_eval([tmp_path / "bad.jsonl"], tmp_path)


def test_mmeb_train(tmp_path):
    f = _w(tmp_path / "t.jsonl", _rows(
        {"qry": "<|image_1|> Represent the image", "qry_image_path": "a.jpg", "pos_text": "cat",
         "pos_image_path": "", "neg_text": "dog", "neg_image_path": ""},
        {"qry": "a cat", "qry_image_path": "", "pos_text": "", "pos_image_path": "c.jpg"},
    ))
    rows = read_train([f], tmp_path)
    assert rows[0].query.modality == "image,text" and rows[0].neg.text == "dog"
    assert rows[1].pos.modality == "image" and rows[1].neg is None
    assert strip_placeholder("<|image_1|>") is None
