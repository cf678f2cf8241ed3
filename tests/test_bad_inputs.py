"""The bad-input corpus through the core, the real CLI and the plugin: one clear message per
bad file naming it, the batch going on past it, odd-but-valid files processed."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import corpus
import numpy as np
import pytest

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.image_io import read_image, read_mask


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    d = tmp_path_factory.mktemp("corpus")
    return d, corpus.build(d)


def test_corpus_through_the_core(corpus_dir) -> None:
    d, expect = corpus_dir
    for name, problem in expect.items():
        if problem is None:
            rgb, _ = read_image(d / name)
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
        else:
            with pytest.raises(LesionsegInputError) as info:
                read_image(d / name)
            assert problem in str(info.value) and name in str(info.value), (name, str(info.value))


def test_masks_corpus(tmp_path: Path) -> None:
    expect = corpus.build_masks(tmp_path, (40, 50))
    for name, problem in expect.items():
        if problem is None:
            assert read_mask(tmp_path / name, shape=(40, 50)).sum() == 200
        else:
            with pytest.raises(LesionsegInputError, match=problem):
                read_mask(tmp_path / name, shape=(40, 50))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    p = tmp_path / "locked.png"
    p.write_bytes(b"x")
    p.chmod(0)
    with pytest.raises(LesionsegInputError, match="permission denied"):
        read_image(p)


def test_corpus_through_the_cli_keeps_going(corpus_dir, tiny_model_dir: Path, tmp_path: Path) -> None:
    d, expect = corpus_dir
    files = [str(d / n) for n in sorted(expect)]
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "napari_lesionseg.cli", "predict", *files, "--out", str(out),
                        "--model", str(tiny_model_dir), "--keep-going", "--quiet", "--tta", "none"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    bad = {n for n, p in expect.items() if p is not None or n in corpus.BLANK}
    summary = {row["image"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    for name, problem in expect.items():
        row = summary[name]
        if name in corpus.BLANK:  # read well, shows nothing: an empty mask would read as "no lesions"
            assert row["status"] == "failed" and "the image is blank" in row["error"], (name, row)
            assert f"{name}: shows no fundus" in r.stderr and not (out / f"{Path(name).stem}_mask.png").exists()
        elif problem is None:
            assert row["status"] == "ok", (name, row)
            assert (out / f"{Path(name).stem}_mask.png").exists()
            # a warning that did not stop the photo is in its row, not only on the console
            doubt = "a gray photo (red-free?)"
            assert (doubt in row["notes"]) == (name == "gray.png"), (name, row["notes"])
            assert "does not look like a fundus photograph" not in row["notes"], (name, row["notes"])
            if name == "gray.png":
                assert f"note: {name}: {doubt}" in r.stderr
        else:
            assert row["status"] == "failed" and problem in row["error"], (name, row)
            assert name in r.stderr
    assert f"{len(bad)} file(s) failed" in r.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.gui
def test_bad_layer_in_the_plugin_is_a_notification(make_napari_viewer, tiny_model_dir: Path) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 20, 20), np.uint8), name="a stack", rgb=False)  # 3-D, not a photo
    viewer.add_image(np.zeros((30, 40, 3), np.uint8), name="tiny photo", rgb=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    w.set_model_folder(tiny_model_dir)
    assert "a stack" not in w.image_picker.names
    w.set_model_folder(tiny_model_dir.parent / "nope")
    assert w.run() is None and "does not exist" in w.status.text()
    assert len(viewer.layers) == 2


@pytest.mark.gui
def test_a_blank_capture_in_the_plugin_is_said_to_be_one(make_napari_viewer, qtbot, tiny_model_dir: Path) -> None:
    """A black frame segmented to an empty mask (0 lesions) read as a healthy eye."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((400, 600, 3), np.uint8), name="capture 7", rgb=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    w.set_model_folder(tiny_model_dir)
    assert w.run() is not None
    qtbot.waitUntil(lambda: w.run_button.enabled, timeout=30_000)
    assert w.status.text().startswith("segmentation failed: capture 7: shows no fundus: the image is blank (black")
    assert [ly.name for ly in viewer.layers] == ["capture 7"]
