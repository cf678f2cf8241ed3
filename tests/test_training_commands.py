"""The training module's stand-alone commands (``python -m lesionseg_training.<module>``) under
the project's one error policy: bad input is one line naming the file and the problem, exit
code 2, no traceback, and nothing already there is changed."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from helpers import run_here


def _run(module: str, *args: object):
    return run_here([sys.executable, "-m", f"lesionseg_training.{module}", *map(str, args)],
                    capture_output=True, text=True, timeout=300)


def _one_error_line(r, *named: object) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for thing in named:
        assert str(thing) in lines[-1], (thing, lines[-1])


@pytest.mark.parametrize("module", ["ensemble", "oof_calibrate", "oof_predictions", "oof_record", "pretrain",
                                    "pseudo_labels"])
def test_a_folder_that_is_no_model_or_no_photos_is_named(module: str, tmp_path: Path, tiny_model_dir: Path,
                                                          small_pairs: Path) -> None:
    """Each command given a folder that holds no model (or, for pretraining, no photos): the
    folder in the one error line, nothing written where the output would go."""
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    out = tmp_path / "out"
    images, masks = small_pairs / "images", small_pairs / "masks"
    args = {"ensemble": ["--members", empty, tiny_model_dir, "--out", out],
            "oof_calibrate": ["--model", empty, "--folds", tiny_model_dir, "--images", images, "--masks", masks,
                              "--out", out],
            "oof_predictions": ["--fold", empty, "--images", images, "--masks", masks, "--out", out],
            "oof_record": ["--model", empty, "--report", tmp_path / "report.json", "--variant", "default"],
            "pretrain": ["--unlabelled", empty, "--out", out, "--steps", 2],
            "pseudo_labels": ["--teacher", empty, "--images", images, "--out", out]}[module]
    _one_error_line(_run(module, *args), empty)
    assert not out.exists() and list(empty.iterdir()) == []


@pytest.mark.parametrize("module", ["ensemble", "oof_calibrate"])
def test_an_existing_output_folder_is_refused_untouched(module: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    args = {"ensemble": ["--members", tiny_model_dir, tiny_model_dir],
            "oof_calibrate": ["--model", tiny_model_dir, "--predictions", tmp_path / "p.npz"]}[module]
    r = _run(module, *args, "--out", out)
    _one_error_line(r, out)
    assert "already exists" in r.stderr and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_bad_working_grid_list_is_one_error_line(tmp_path: Path, tiny_model_dir: Path, small_pairs: Path) -> None:
    r = _run("oof_predictions", "--fold", tiny_model_dir, "--images", small_pairs / "images", "--masks",
             small_pairs / "masks", "--out", tmp_path / "p.npz", "--extra-grids", "wide")
    _one_error_line(r, "--extra-grids")
    assert not (tmp_path / "p.npz").exists()


def test_pseudo_labels_say_which_photos_were_unreadable(tmp_path: Path, tiny_model_dir: Path,
                                                        small_pairs: Path) -> None:
    """An unreadable photo among the unlabelled ones is left out and named; a folder where no
    photo could be labelled is an error, not a mean of nothing."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.png").write_bytes(b"not a png")
    r = _run("pseudo_labels", "--teacher", tiny_model_dir, "--images", photos, "--out", tmp_path / "none")
    _one_error_line(r, photos, "no photo was labelled")
    assert "broken" in r.stderr and "nan" not in r.stdout
    first = sorted((small_pairs / "images").iterdir())[0]
    shutil.copyfile(first, photos / first.name)
    r = _run("pseudo_labels", "--teacher", tiny_model_dir, "--images", photos, "--out", tmp_path / "labels")
    assert r.returncode == 0, r.stderr
    assert "1 photos labelled" in r.stdout and "1 unreadable left out" in r.stdout and "broken" in r.stderr
    assert (tmp_path / "labels" / f"{first.stem}.npz").is_file()


def test_pseudo_label_thresholds_out_of_order_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    r = _run("pseudo_labels", "--teacher", tiny_model_dir, "--images", tmp_path, "--out", tmp_path / "o",
             "--lo", "0.6", "--hi", "0.5")
    assert r.returncode == 2 and "--lo < --hi" in r.stderr and not (tmp_path / "o").exists()
