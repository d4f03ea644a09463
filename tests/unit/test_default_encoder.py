"""The names users start from: "default" is the encoder DEFAULT_ENCODER names; omniret-mini ships in the package."""

import numpy as np
import pytest

from omniret.encoders import DEFAULT_ENCODER, ENCODERS, load_builtins, load_encoder, saved
from omniret.errors import ModelNotFoundError


def test_default_is_the_chosen_encoder():
    load_builtins()
    assert ENCODERS.get("default") is ENCODERS.get(DEFAULT_ENCODER)
    assert DEFAULT_ENCODER in ENCODERS.help("default")


def test_packaged_omniret_mini_loads_with_its_recipe():
    enc = load_encoder("omniret-mini")
    assert enc.family == "omni-mini" and enc.dim == 384
    assert enc.recipe()["weights"] != "base"  # the trained weights, not the untrained architecture
    e = enc.encode_queries(["a red apple"], instruction="Retrieve the emoji that matches the name.")
    assert e.shape == (1, 384) and np.isclose(np.linalg.norm(e), 1.0, atol=1e-5)


def test_missing_packaged_weights_name_the_place(monkeypatch, tmp_path):
    monkeypatch.setattr(saved, "packaged_path", lambda name: tmp_path / name)
    with pytest.raises(ModelNotFoundError, match="omniret-mini.*missing"):
        load_encoder("omniret-mini")
