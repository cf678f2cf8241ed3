"""Model folders: atomic writes, self-rebuilding loads, and refusal of untrusted content."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
from napari_lesionseg.core.models import build_model


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


def _strict(text: str) -> object:
    def refuse(word: str) -> None:
        raise ValueError(f"not strict JSON: {word}")
    return json.loads(text, parse_constant=refuse)


def test_scores_of_nothing_are_written_as_strict_json(tmp_path: Path) -> None:
    """A fine-tune scored on a held-out photo without a lesion has AUPR NaN: metrics.json held the
    bare word NaN, which strict JSON readers (jq, a browser, another language) refuse."""
    cfg = tiny_config()
    scores = {"old": {"aupr": float("nan"), "dice_ds": 1.0}, "new": {"aupr": float("nan"), "dice_ds": 1.0},
              "curve": [0.5, float("inf")]}
    folder = save_model_folder(tmp_path / "m", build_model(cfg.network), cfg, scores, {"parent": None})
    written = _strict((folder / "metrics.json").read_text(encoding="utf-8"))
    assert written == {"old": {"aupr": None, "dice_ds": 1.0}, "new": {"aupr": None, "dice_ds": 1.0},
                       "curve": [0.5, None]}
    assert load_model_folder(folder).metrics["old"]["aupr"] is None


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
    import hashlib

    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    folder = _save(tmp_path)
    state = st_load((folder / "weights.safetensors").read_bytes())
    state["head.weight"] = torch.zeros(1, 5, 1, 1)
    data = st_save(state)
    (folder / "weights.safetensors").write_bytes(data)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(data).hexdigest()
    _write_config(folder, cfg)
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


def _write_config(folder: Path, raw: dict) -> None:
    """Rewrite config.json as a crafted folder would, with a matching config_sha256."""
    from napari_lesionseg.core.dataclass_io import from_dict
    from napari_lesionseg.core.model_config import ModelConfig
    from napari_lesionseg.core.model_folder import config_digest

    raw = {**raw, "config_sha256": None}
    raw["config_sha256"] = config_digest(from_dict(ModelConfig, raw))
    (folder / "config.json").write_text(json.dumps(raw))


def _crafted(tmp_path: Path, kind: str) -> Path:
    folder = _save(tmp_path)
    if kind == "fifo_config":
        (folder / "config.json").unlink()
        os.mkfifo(folder / "config.json")
    elif kind == "dir_config":
        (folder / "config.json").unlink()
        (folder / "config.json").mkdir()
    elif kind == "dir_metrics":
        (folder / "metrics.json").unlink()
        (folder / "metrics.json").mkdir()
    elif kind == "symlink_loop":
        (folder / "lineage.json").unlink()
        os.symlink(folder / "lineage.json", folder / "lineage.json")
    elif kind == "deep_json":
        (folder / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "huge_int":
        (folder / "metrics.json").write_text('{"n": ' + "9" * 5000 + "}")
    elif kind == "weights_path":
        raw = json.loads((folder / "config.json").read_text())
        raw["network"]["encoder"]["weights_path"] = "/etc/passwd"
        _write_config(folder, raw)
    elif kind == "edited_config":
        raw = json.loads((folder / "config.json").read_text())
        raw["inference"]["threshold"] = 0.9
        (folder / "config.json").write_text(json.dumps(raw))
    elif kind == "not_utf8":
        (folder / "lineage.json").write_bytes(b"\xff\xfe{}")
    return folder


CRAFTED = {
    "fifo_config": "config.json is not a regular file",
    "dir_config": "config.json is a folder",
    "dir_metrics": "metrics.json is a folder",
    "symlink_loop": "symlink is broken or loops",
    "deep_json": "nested more than",
    "huge_int": "not valid JSON",
    "weights_path": "weights_path names a file outside",
    "edited_config": "changed after the model was saved",
    "not_utf8": "not UTF-8",
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_folders_give_a_clear_error(tmp_path: Path, kind: str) -> None:
    folder = _crafted(tmp_path, kind)
    with pytest.raises(LesionsegInputError, match=CRAFTED[kind]) as err:
        load_model_folder(folder)
    assert str(folder) in str(err.value)


def test_crafted_folders_through_the_cli(tmp_path: Path, sample_rgb) -> None:
    """The real command: one line, exit 2, no traceback, no hang (a FIFO config once hung)."""
    from test_cli import lesionseg

    photo = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(sample_rgb[::8, ::8]).save(photo)
    for kind in ("fifo_config", "deep_json", "huge_int", "weights_path"):
        folder = _crafted(tmp_path / kind, kind)
        r = lesionseg("predict", photo, "--out", tmp_path / "out", "--model", folder, "--quiet", timeout=120,
                      process=True)  # the crafted folders once hung a process: a timeout guards it
        assert r.returncode == 2 and "Traceback" not in r.stderr, (kind, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and CRAFTED[kind] in r.stderr


def test_shapes_are_checked_before_the_network_is_allocated(tmp_path: Path) -> None:
    """A wide network with a small weights file is refused on shapes (network on the meta
    device), not after allocating it (it once peaked at 2.2 GB); an enormous one is refused on
    its parameter count."""
    import subprocess
    import sys

    folder = _save(tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    raw["network"]["widths"] = [4096, 4096, 4096]
    _write_config(folder, raw)
    code = ("import sys\n"
            "from napari_lesionseg.core.model_folder import load_model_folder\n"
            "from napari_lesionseg.core.errors import LesionsegInputError\n"
            "try:\n    load_model_folder(sys.argv[1])\nexcept LesionsegInputError as e:\n    print(e)\n"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n")  # kB, this program only
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    message, peak_kb = r.stdout.strip().splitlines()
    assert "has shape" in message or "parameters" in message, r.stdout + r.stderr
    assert int(peak_kb) < 900_000, f"peak RSS {int(peak_kb) // 1024} MB"
    raw["network"]["widths"] = [4096] * 7
    _write_config(folder, raw)
    with pytest.raises(LesionsegInputError, match="parameters, over the limit"):
        load_model_folder(folder)


def test_saving_drops_an_encoder_weights_path(tmp_path: Path) -> None:
    from dataclasses import replace

    cfg = tiny_config()
    cfg = replace(cfg, network=replace(cfg.network, encoder=replace(cfg.network.encoder, weights_path="/x.pt")))
    folder = save_model_folder(tmp_path / "m", build_model(tiny_config().network), cfg)
    assert load_model_folder(folder).config.network.encoder.weights_path is None


def test_a_config_of_an_earlier_version_loads(tmp_path: Path) -> None:
    """``inference.fuzzy.tau_d`` (before it took DALE's name ``tau_er``), with no config_sha256."""
    folder = _save(tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    raw["inference"]["fuzzy"]["tau_d"] = raw["inference"]["fuzzy"].pop("tau_er")
    raw["inference"]["fuzzy"]["tau_d"] = 0.07
    raw.pop("config_sha256")
    (folder / "config.json").write_text(json.dumps(raw))
    assert load_model_folder(folder).config.inference.fuzzy.tau_er == 0.07


@pytest.mark.parametrize(
    ("metrics", "unseen"),
    [
        ({"val_images": ["a", "b"]}, ["a", "b"]),  # validation photos, not trained on
        ({"val_images": ["a", "b"], "val_in_sample": True}, []),  # a final model's: trained on
        ({"val_images": ["a"], "val_in_sample": True, "held_out": {"photos": ["x", "y"]}}, ["x", "y"]),
        ({}, []),
    ],
)
def test_unseen_photos_are_never_training_photos(tmp_path: Path, metrics: dict, unseen: list[str]) -> None:
    """What benchmarks score a shipped model on as new photos (benchmarks/adapt.py)."""
    cfg = tiny_config()
    folder = save_model_folder(tmp_path / "m", build_model(cfg.network), cfg, metrics)
    assert load_model_folder(folder).unseen_photos == unseen
