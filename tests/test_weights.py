import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import attnviz
from attnviz.weights import WeightsError, WeightsMeta, load_pair, save_pair, sha256_of

from .conftest import tiny_meta, tiny_model


def test_round_trip_gives_the_same_model_in_eval_mode(tmp_path):
    model = tiny_model("cbam_resnet18", seed=3)
    path = save_pair(model, tiny_meta("cbam_resnet18", "mine"), tmp_path)
    loaded, meta = load_pair(path)
    assert not loaded.training and loaded.attnviz_meta is meta
    assert meta.sha256 == sha256_of(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_the_same_weights_are_always_the_same_file(tmp_path):
    # The sha256 in the metadata then identifies a training result: a re-run that
    # reproduces the weights reproduces the file (safetensors orders metadata at random).
    model = tiny_model("se_resnet18", seed=1)
    files = {save_pair(model, tiny_meta("se_resnet18", "m"), tmp_path / str(i)).read_bytes() for i in range(8)}
    assert len(files) == 1


def test_models_are_found_through_the_environment_variable(tiny_env):
    names = attnviz.available_models()
    assert {"tiny_resnet18", "tiny_se_resnet18", "tiny_cbam_resnet18", "tiny_sa_resnet18"} <= set(names)
    assert attnviz.load_model("tiny_se_resnet18").attnviz_meta.arch == "se_resnet18"


def test_unknown_model_lists_what_is_available(tiny_env):
    with pytest.raises(WeightsError, match="tiny_resnet18"):
        attnviz.load_model("nope")


def _pair(tmp_path, arch="se_resnet18"):
    return save_pair(tiny_model(arch), tiny_meta(arch, "m"), tmp_path)


def test_a_changed_weights_file_is_refused_by_its_hash(tmp_path):
    path = _pair(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_pair(path)


def test_architecture_mismatch_is_named(tmp_path):
    path = _pair(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["arch"] = "cbam_resnet18"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="holds a se_resnet18 but its metadata says cbam_resnet18: architecture"):
        load_pair(path)


def test_architecture_mismatch_without_a_header_names_the_tensors(tmp_path):
    from safetensors.torch import save_file

    from attnviz.weights import sha256_of

    path = tmp_path / "m.safetensors"
    save_file(tiny_model("se_resnet18").state_dict(), str(path))  # a user's file: no attnviz header
    meta = tiny_meta("cbam_resnet18", "m")
    meta.sha256 = sha256_of(path)
    path.with_suffix(".json").write_text(meta.to_json())
    with pytest.raises(WeightsError, match="missing.*cbam|unexpected.*se"):
        load_pair(path)


def test_self_attention_heads_are_recorded_and_checked(tmp_path):
    # Heads split the channels inside the layer: no tensor shape shows them, so a file
    # trained with other heads would load cleanly and compute something else.
    path = _pair(tmp_path, "sa_resnet18")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["attention_heads"] == {"layer2.1.attn": 2, "layer3.1.attn": 4}
    assert load_pair(path)[0].layer2[1].attn.num_heads == 2
    for recorded, message in [({"layer2.1.attn": 4, "layer3.1.attn": 4}, "{'layer2.1.attn': 4"),
                              ({}, "none recorded")]:
        meta["attention_heads"] = recorded
        path.with_suffix(".json").write_text(json.dumps(meta))
        with pytest.raises(WeightsError, match=rf"m.json: attention heads {message}.*builds .*re-train"):
            load_pair(path)
    cnn = _pair(tmp_path / "cnn", "cbam_resnet18")
    assert json.loads(cnn.with_suffix(".json").read_text())["attention_heads"] == {}


def test_wrong_shape_is_refused_with_the_tensor_name(tmp_path):
    path = _pair(tmp_path, "resnet18")
    meta = WeightsMeta.from_json(path.with_suffix(".json"))
    state = tiny_model("resnet18").state_dict()
    state["fc.weight"] = torch.zeros(5, state["fc.weight"].shape[1])
    save_file(state, str(path))
    meta.sha256 = sha256_of(path)
    path.with_suffix(".json").write_text(meta.to_json())
    with pytest.raises(WeightsError, match=r"fc.weight: \(5, 64\)"):
        load_pair(path)


def test_malformed_metadata_is_one_clear_error(tmp_path):
    path = _pair(tmp_path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match="not readable JSON"):
        load_pair(path)
    path.with_suffix(".json").write_text(json.dumps({"name": "m", "arch": "alexnet", "width": 8, "classes": ["a"]}))
    with pytest.raises(WeightsError, match="unknown architecture"):
        load_pair(path)


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(_Payload.target), "pwned"))


def test_a_pickle_is_never_unpickled(tmp_path):
    target = tmp_path / "payload-ran"
    _Payload.target = str(target)
    path = _pair(tmp_path)
    path.write_bytes(pickle.dumps({"fc.weight": _Payload()}))
    meta = WeightsMeta.from_json(path.with_suffix(".json"))
    meta.sha256 = sha256_of(path)
    path.with_suffix(".json").write_text(meta.to_json())
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_pair(path)
    assert not target.exists()
