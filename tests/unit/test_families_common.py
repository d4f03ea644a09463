"""Poolers (exact values, both padding sides), registered checkpoint resolution, and `omniret models`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from omniret import load_encoder
from omniret.encoders.pooling import last_token, last_token_index, masked_mean, pool
from omniret.errors import ModelNotFoundError
from tiny_models import build_tiny_clip


# --------------------------------------------------------------------------------------------- pooling
def test_masked_mean_exact_and_nan_safe():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0]],
                      [[5.0, 5.0], [1.0, 1.0], [3.0, 9.0]]])
    m = torch.tensor([[1, 1, 0], [0, 1, 1]])
    out = masked_mean(h, m)
    assert out.tolist() == [[2.0, 3.0], [2.0, 5.0]]
    assert masked_mean(h, torch.zeros(2, 3)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_last_token_either_padding_side():
    h = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert last_token_index(right).tolist() == [1, 3]
    assert last_token(h, right).flatten().tolist() == [1.0, 7.0]
    assert last_token(h, left).flatten().tolist() == [3.0, 7.0]
    assert pool("first", h, left).flatten().tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="selects no token"):
        last_token(h, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="expects hidden"):
        masked_mean(h, torch.ones(3, 4))


# --------------------------------------------------------------------------------------------- hub
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_registered_name_without_weights_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("OMNIRET_MODELS_DIR", raising=False)
    with pytest.raises(ModelNotFoundError) as e:
        load_encoder("openai/clip-vit-base-patch32")
    msg = str(e.value)
    assert "openai/clip-vit-base-patch32" in msg and "HF_HUB_OFFLINE" in msg
    assert "OMNIRET_MODELS_DIR" in msg and "family='clip'" in msg


def test_registered_name_resolves_from_models_dir(monkeypatch, tmp_path, tiny_clip):
    dest = tmp_path / "models" / "openai" / "clip-vit-base-patch32"
    shutil.copytree(tiny_clip, dest)
    monkeypatch.setenv("OMNIRET_MODELS_DIR", str(tmp_path / "models"))
    enc = load_encoder("openai/clip-vit-base-patch32")
    assert enc.name == "openai/clip-vit-base-patch32" and enc.family == "clip"
    assert enc.recipe()["use_instruction"] is False
    direct = load_encoder(tiny_clip, family="clip")
    np.testing.assert_array_equal(enc.encode_documents(["a red dog"]), direct.encode_documents(["a red dog"]))


# --------------------------------------------------------------------------------------------- CLI
def test_models_command_lists_families_and_names():
    from typer.testing import CliRunner

    from omniret.cli.app import app

    res = CliRunner().invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    fams = {f["name"] for f in data["families"]}
    assert {"clip", "siglip", "gme", "vlm2vec", "rematch"} <= fams
    names = {m["name"]: m for m in data["models"]}
    for n, fam in [("openai/clip-vit-base-patch32", "clip"), ("google/siglip-base-patch16-224", "siglip"),
                   ("Alibaba-NLP/gme-Qwen2-VL-2B-Instruct", "gme"), ("TIGER-Lab/VLM2Vec-Qwen2VL-2B", "vlm2vec"),
                   ("FireRedTeam/ReMatch-3B", "rematch")]:
        assert names[n]["family"] == fam
    table = CliRunner().invoke(app, ["models"])
    assert table.exit_code == 0 and "registered names" in table.output and "vlm2vec" in table.output
