"""Model folders: atomic writes, self-rebuilding loads, and refusal of untrusted content."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
from napari_lesionseg.core.models import build_model

from helpers import tiny_config


def _save(tmp_path: Path, name: str = "m") -> Path:
    cfg = tiny_config()
    return save_model_folder(tmp_path / name, build_model(cfg.network), cfg, {"val_dice": 0.5}, {"parent": None})


def test_roundtrip_rebuilds_identical_network(tmp_path: Path) -> None:
    torch.manual_seed(1)
    cfg = tiny_config()
    net = build_model(cfg.network).eval()
    folder = save_model_folder(tmp_path / "m", net, cfg, {"val_dice": 0.5}, {"parent": "x"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "lineage.json", "metrics.json",
                                                        "weights.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    loaded = load_model_folder(folder)
    assert loaded.metrics == {"val_dice": 0.5} and loaded.lineage == {"parent": "x"}
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x).logits, net(x).logits)
    assert len(loaded.config.weights_sha256 or "") == 64


def test_never_overwrites(tmp_path: Path) -> None:
    folder = _save(tmp_path)
    before = (folder / "weights.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        _save(tmp_path)
    assert (folder / "weights.safetensors").read_bytes() == before


def test_changed_weight_byte_is_refused(tmp_path: Path) -> None:
    folder = _save(tmp_path)
    w = folder / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(LesionsegInputError, match="sha256"):
        load_model_folder(folder)


def test_pickle_file_in_folder_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = _save(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "extra.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(LesionsegInputError, match="pickle"):
        load_model_folder(folder)
    assert not marker.exists()
    torch.save({"w": torch.zeros(1)}, folder / "weights.pt")
    (folder / "extra.pkl").unlink()
    with pytest.raises(LesionsegInputError, match="pickle"):
        load_model_folder(folder)


def test_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _save(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (folder / "metrics.json").unlink()
    (folder / "metrics.json").symlink_to(outside)
    with pytest.raises(LesionsegInputError, match="symlink"):
        load_model_folder(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(colour="red"), "colour: unknown key"),
        (lambda c: c["network"].update(widths="wide"), "network.widths: expected a list"),
        (lambda c: c["network"].update(widths=[4, 8, 10**6]), "network.widths"),
        (lambda c: c["preprocess"].update(fov_diameter=10**7), "fov_diameter"),
        (lambda c: c["inference"].update(threshold=2.0), "threshold"),
        (lambda c: c.update(format_version=99), "format_version"),
    ],
)
def test_bad_config_is_refused_with_the_key(tmp_path: Path, edit, message: str) -> None:
    folder = _save(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LesionsegInputError, match=message):
        load_model_folder(folder)


def test_wrong_shape_names_the_key(tmp_path: Path) -> None:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save
    import hashlib

    folder = _save(tmp_path)
    state = st_load((folder / "weights.safetensors").read_bytes())
    state["head.weight"] = torch.zeros(1, 5, 1, 1)
    data = st_save(state)
    (folder / "weights.safetensors").write_bytes(data)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LesionsegInputError, match="head.weight"):
        load_model_folder(folder)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(LesionsegInputError, match="does not exist"):
        load_model_folder(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(LesionsegInputError, match="not a folder"):
        load_model_folder(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LesionsegInputError, match="config.json is missing"):
        load_model_folder(tmp_path / "empty")
