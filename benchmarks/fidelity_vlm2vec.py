"""VLM2Vec fidelity: max |omniret - reference| per MMEB eval parser, for the default recipe and the old options.

The reference is the independent computation of ``tests/unit/test_vlm2vec_reference.py`` (hand-written MMEB
strings, 3,136..1,003,520-pixel bounds, VLM2Vec's ``get_rope_index`` semantics) on a tiny random Qwen2-VL, at the
default rope theta and at the position-sensitive theta the test uses.

    PYTHONPATH=src python benchmarks/fidelity_vlm2vec.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "unit")]

import test_vlm2vec_reference as ref  # noqa: E402

from omniret import load_encoder  # noqa: E402
from omniret.data.mmeb import dataset_files, read_eval  # noqa: E402
from tiny_models import build_tiny_qwen2vl  # noqa: E402

VARIANTS = {
    "default": {},
    "positions=mrope": {"positions": "mrope"},
    "pre-fix (mrope, no newlines, processor bounds)": {"positions": "mrope", "mmeb_newlines": False,
                                                       "min_pixels": None, "max_pixels": None},
}


class _Dirs:
    def __init__(self, base: Path) -> None:
        self.base = base

    def mktemp(self, name: str) -> Path:
        p = self.base / name
        p.mkdir()
        return p


def main() -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    data = ref.mmeb._fixture_function(_Dirs(tmp))
    files = dataset_files(data)
    print("| rope theta | data set | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for theta in (10000.0, 2.0):
        path = build_tiny_qwen2vl(tmp / f"qwen-{theta}")
        cfg = json.loads((path / "config.json").read_text())
        cfg["text_config"]["rope_parameters"]["rope_theta"] = theta
        (path / "config.json").write_text(json.dumps(cfg))
        encs = {k: load_encoder(path, family="vlm2vec", **v) for k, v in VARIANTS.items()}
        for name, (queries, cands) in ref.EXPECTED.items():
            (row,) = read_eval(files[name], data, name)
            q_ref = ref._reference(path, queries, [p.load() for p in row.query.images])
            c_ref = ref._reference(path, cands, [p.load() for c in row.candidates for p in c.images])
            diffs = [max(np.abs(e.encode_queries([row.query]) - q_ref).max(),
                         np.abs(e.encode_documents(row.candidates) - c_ref).max()) for e in encs.values()]
            print(f"| {theta:g} | {name} | " + " | ".join(f"{d:.1e}" for d in diffs) + " |")


if __name__ == "__main__":
    main()
