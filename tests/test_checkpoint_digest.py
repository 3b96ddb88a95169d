"""Checkpoints detect damage (issue 22): save_checkpoint records the SHA-256 of the weights in
manifest.json, every load verifies it, old checkpoints (no manifest) load with one warning, and the
shipped checkpoint carries its digest. Digests are recomputed here with hashlib, independently of
hla_deploy.checkpoint_manifest. The CLI statuses (exit 2) are rows of tests/test_exit_codes.py."""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pytest
import torch

from hla_deploy.checkpoint_manifest import MANIFEST_NAME, NoDigestWarning
from hla_deploy.models import CheckpointError, HLALanguageModel, default_checkpoint
from hla_deploy.models.checkpoint import WEIGHTS_NAME
from test_exit_codes import flip_data_bytes


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path):
    out = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, out)
    return out


def test_save_records_the_weights_digest(ckpt):
    doc = json.loads((ckpt / MANIFEST_NAME).read_text())
    assert doc["format"] == "hla-deploy checkpoint manifest" and doc["format_version"] == 1
    assert doc["files"] == {WEIGHTS_NAME: {"sha256": sha256(ckpt / WEIGHTS_NAME),
                                           "bytes": (ckpt / WEIGHTS_NAME).stat().st_size}}
    json.loads((ckpt / "config.json").read_text())  # config.json is still HLAConfig.to_dict(), nothing added
    assert "sha256" not in (ckpt / "config.json").read_text()


def test_flipped_data_bytes_are_refused_naming_file_and_digests(ckpt, tiny_ckpt):
    good = sha256(ckpt / WEIGHTS_NAME)
    flip_data_bytes(ckpt / WEIGHTS_NAME)
    bad = sha256(ckpt / WEIGHTS_NAME)
    with pytest.raises(CheckpointError) as e:
        HLALanguageModel.load(ckpt)
    msg = str(e.value)
    assert str(ckpt / WEIGHTS_NAME) in msg and good in msg and bad in msg
    # without the manifest the same damage loads silently into other, finite weights: what the digest is for
    (ckpt / MANIFEST_NAME).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDigestWarning)
        damaged = HLALanguageModel.load(ckpt).state_dict()
    original = HLALanguageModel.load(tiny_ckpt).state_dict()
    assert all(torch.isfinite(t).all() for t in damaged.values())
    assert any(not torch.equal(damaged[k], original[k]) for k in original)


def test_old_checkpoint_loads_with_one_warning(ckpt):
    (ckpt / MANIFEST_NAME).unlink()  # as saved before manifests existed
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        model = HLALanguageModel.load(ckpt)
        HLALanguageModel.load(ckpt)  # loading it again does not repeat the warning
    ours = [w for w in rec if issubclass(w.category, NoDigestWarning)]
    assert len(ours) == 1, [str(w.message) for w in rec]
    assert str(ckpt) in str(ours[0].message) and "no manifest.json" in str(ours[0].message)
    assert model.config.n_layers == 2
    # saving it again adds the digest: no warning from then on
    model.save(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HLALanguageModel.load(ckpt)


def test_old_checkpoint_warns_once_through_the_cli(ckpt, tmp_path, capsys):
    from hla_deploy.cli import main
    (ckpt / MANIFEST_NAME).unlink()
    rc = main(["export", str(ckpt), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == 1 and lines[0].startswith("hla-deploy export: warning: checkpoint"), err


def test_manifest_that_does_not_list_the_weights_is_refused(ckpt):
    (ckpt / MANIFEST_NAME).write_text(json.dumps({"format": "hla-deploy checkpoint manifest",
                                                  "format_version": 1, "files": {}}))
    with pytest.raises(CheckpointError, match=r"records no SHA-256 for model\.safetensors"):
        HLALanguageModel.load(ckpt)
    (ckpt / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest\.json' is unreadable"):
        HLALanguageModel.load(ckpt)


def test_interrupted_save_leaves_no_stale_digest(ckpt, monkeypatch):
    """The manifest goes first and comes back last: a save that fails while writing the weights
    leaves the old weights and no manifest (a warning), never a manifest of other weights."""
    import safetensors.torch
    model = HLALanguageModel.load(ckpt)
    before = sha256(ckpt / WEIGHTS_NAME)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError):
        model.save(ckpt)
    assert sha256(ckpt / WEIGHTS_NAME) == before and not (ckpt / MANIFEST_NAME).exists()


def test_shipped_checkpoint_carries_its_digest():
    ck = default_checkpoint()
    doc = json.loads((ck / MANIFEST_NAME).read_text())
    assert doc["files"][WEIGHTS_NAME]["sha256"] == sha256(ck / WEIGHTS_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NoDigestWarning
        HLALanguageModel.load(ck)
