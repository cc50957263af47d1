"""Checkpoints: round trip, atomic writes, and refusal of pickles, corrupt files and newer formats."""
import json
import os
import pickle
import struct

import pytest
import torch

from dal.engine.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, parse_threshold_key,
                                   read_metadata, save_checkpoint, threshold_for)
from dal.engine.config import Config
from dal.models import ModelConfig, build_model

TINY = dict(channels=4, levels=2, restoration_channels=4, code_channels=4, decoder_channels=4, ae_latent=4)


def _config(kind="dal"):
    return Config().replace({"model.kind": kind, **{f"model.{k}": v for k, v in TINY.items()}})


def _save(path, kind="dal", **kwargs):
    config = _config(kind)
    torch.manual_seed(0)
    model = build_model(config.model)
    save_checkpoint(path, model, model_kind=kind, config=config.to_dict(), preprocessing=config.preprocessing.to_dict(),
                    thresholds={"fpr_0.01": 0.3, "fpr_0.05": 0.1}, **kwargs)
    return model, config


@pytest.mark.parametrize("kind", ["dal", "ae", "dae"])
def test_round_trip_gives_the_same_model_in_eval_mode(tmp_path, kind):
    model, config = _save(tmp_path / "m.safetensors", kind)
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.model_kind == kind and not loaded.model.training
    assert loaded.thresholds == {"fpr_0.01": 0.3, "fpr_0.05": 0.1}
    assert loaded.config == config.to_dict() and loaded.preprocessing == config.preprocessing.to_dict()
    assert loaded.version and loaded.training is None and loaded.optimizer_state is None
    model.eval()
    x = torch.rand(2, 1, 16, 20)
    torch.testing.assert_close(loaded.model.pseudo_healthy(x)["phi"], model.pseudo_healthy(x)["phi"])


def test_resumable_checkpoint_restores_optimizer_and_rng(tmp_path):
    config = _config("ae")
    torch.manual_seed(0)
    model = build_model(config.model)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model({"image": torch.rand(2, 1, 16, 20)})["loss"].backward()
    optimizer.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "last.safetensors", model, model_kind="ae", config=config.to_dict(),
                    preprocessing={}, optimizer=optimizer, training={"step": 1, "epoch": 0})
    expected_draw = torch.rand(3)
    loaded = load_checkpoint(tmp_path / "last.safetensors")
    assert loaded.training == {"step": 1, "epoch": 0}
    fresh = torch.optim.Adam(loaded.model.parameters(), 1e-3)
    fresh.load_state_dict(loaded.optimizer_state)
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
    torch.set_rng_state(loaded.rng_state)
    torch.testing.assert_close(torch.rand(3), expected_draw)


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.safetensors"
    if writer == "torch.save":
        torch.save({"model": _Payload(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError, match="pickled") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_header_length_that_starts_like_a_pickle_still_loads(tmp_path):
    """The safetensors header length is little-endian: its first byte is 0x80, pickle's first
    byte, for one header length in 256. Such a checkpoint is not a pickle and must load."""
    path = tmp_path / "m.safetensors"
    for pad in range(256):
        _save(path, metrics={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_checkpoint(path).metrics == {"pad": "x" * pad}


def test_corrupt_and_truncated_files_raise_a_clear_error_naming_the_file(tmp_path):
    _save(tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01\x02\x03")
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    for name in ("truncated", "garbage", "noise", "missing"):
        path = tmp_path / f"{name}.safetensors"
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)


def _rewrite_metadata(src, dst, **changes):
    data = src.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header["__metadata__"].update(changes)
    encoded = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size:])


def test_newer_format_and_foreign_safetensors_are_refused(tmp_path):
    _save(tmp_path / "good.safetensors")
    _rewrite_metadata(tmp_path / "good.safetensors", tmp_path / "newer.safetensors",
                      format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="format version .* upgrade dal"):
        load_checkpoint(tmp_path / "newer.safetensors")
    _rewrite_metadata(tmp_path / "good.safetensors", tmp_path / "other.safetensors", format="something-else")
    with pytest.raises(CheckpointError, match="not a dal checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")
    _rewrite_metadata(tmp_path / "good.safetensors", tmp_path / "badjson.safetensors", config="{not json")
    with pytest.raises(CheckpointError, match="corrupt dal metadata"):
        read_metadata(tmp_path / "badjson.safetensors")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    _save(tmp_path / "good.safetensors")
    config = _config().to_dict()
    config["model"]["channels"] = 6
    _rewrite_metadata(tmp_path / "good.safetensors", tmp_path / "mismatch.safetensors", config=json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "mismatch.safetensors")


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    _save(path)
    before = path.read_bytes()
    import dal.engine.checkpoint as checkpoint

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(checkpoint, "save_file", lambda tensors, name, metadata: (open(name, "wb").write(b"half"), crash()))
    with pytest.raises(KeyboardInterrupt):
        _save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    load_checkpoint(path)


@pytest.mark.parametrize("key", ["fpr_0.1", "fpr_0.01/t3", "fpr_0.01/", "t1"])
def test_unknown_threshold_keys_are_rejected(tmp_path, key):
    config = _config("ae")
    with pytest.raises(ValueError, match="thresholds"):
        save_checkpoint(tmp_path / "x.safetensors", build_model(config.model), model_kind="ae",
                        config=config.to_dict(), preprocessing={}, thresholds={key: 1.0})


def test_a_contrast_takes_its_own_threshold_and_any_other_the_pooled_one(tmp_path):
    config = _config("ae")
    thresholds = {"fpr_0.01": 0.3, "fpr_0.05": 0.1, "fpr_0.01/t2": 0.4}
    path = save_checkpoint(tmp_path / "x.safetensors", build_model(config.model), model_kind="ae",
                           config=config.to_dict(), preprocessing={}, thresholds=thresholds)
    held = load_checkpoint(path).thresholds
    assert held == thresholds
    assert threshold_for(held, 0.01, "t2") == (0.4, "fpr_0.01/t2") == threshold_for(held, 0.01, "T2")
    assert threshold_for(held, 0.01, "flair") == (0.3, "fpr_0.01") == threshold_for(held, 0.01, None)
    assert threshold_for(held, 0.05, "t2") == (0.1, "fpr_0.05")
    assert threshold_for({"fpr_0.05": 0.1}, 0.01, "t2") is None
    assert parse_threshold_key("fpr_0.05/t2") == (0.05, "t2") and parse_threshold_key("fpr_0.05") == (0.05, None)
