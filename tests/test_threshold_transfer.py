"""``benchmarks/threshold_transfer.py``: what a threshold fitted on some folds' stored
predictions costs on the others', read from real stored-predictions files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import benchmark_module


def _fold_file(path: Path, seed: int, centre: float) -> Path:
    """A stored-predictions file of three photos whose lesion pixels score around ``centre``
    (logit) and whose background scores around -3."""
    from lesionseg_training.oof_predictions import Predicted, save

    rng = np.random.default_rng(seed)
    preds = []
    for i in range(3):
        labels = (rng.random((2, 40, 40)) < 0.1).astype(np.uint8)
        z = np.where(labels == 1, rng.normal(centre, 1.0, labels.shape), rng.normal(-3.0, 1.0, labels.shape))
        probs = (1 / (1 + np.exp(-z))).astype(np.float32)
        preds.append(Predicted(f"IDRiD_{seed}{i}", probs, labels, np.ones((40, 40), bool)))
    save(path, preds, {"recipe_io": {"outputs": ["HE", "SE"]}, "held_out": [p.id for p in preds], "trained": []})
    return path


def test_a_cut_is_scored_as_the_mask_it_makes() -> None:
    tt = benchmark_module("threshold_transfer")
    hist = np.array([[5, 3, 1, 0], [0, 1, 2, 4]])  # background, lesion counts in four rising bins
    # cut at bin 2 keeps bins 2-3: tp 6, fp 1, fn 1 -> Dice 12 / 14
    assert tt.dice_by_cut(hist)[2] == pytest.approx(12 / 14)
    assert tt.dice_by_cut(hist)[0] == pytest.approx(2 * 7 / (2 * 7 + 9))
    same = tt.transfer(hist, hist)
    assert same["loss"] == 0 and same["cut_bins_apart"] == 0
    other = np.array([[5, 3, 1, 1], [0, 0, 0, 4]])  # test photos whose best cut is one bin higher
    moved = tt.transfer(hist, other)
    assert moved["dice"] == pytest.approx(8 / 10) and moved["own_best"] == pytest.approx(8 / 9)
    assert moved["loss"] == pytest.approx(8 / 9 - 8 / 10) and moved["cut_bins_apart"] == -1


def test_every_split_of_the_files_is_fitted_and_tested(tmp_path: Path) -> None:
    """Three folds, fitted on two: three splits per output; a fold whose lesions score lower
    than the others' makes the split that tests on it lose Dice at the others' cut."""
    files = [_fold_file(tmp_path / f"f{i}.npz", i, c) for i, c in enumerate((2.0, 2.0, -1.0))]
    tt = Path(benchmark_module("threshold_transfer").__file__)
    out = tmp_path / "tt.json"
    run = subprocess.run([sys.executable, str(tt), "--predictions", *map(str, files), "--fit", "2", "--exclude", "IDRiD_00",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    he = report["fit_sizes"]["2"]["HE"]
    assert [s["fit"] for s in he["splits"]] == [[0, 1], [0, 2], [1, 2]] and set(report["fit_sizes"]["2"]) == {"HE", "SE"}
    by_fit = {tuple(s["fit"]): s for s in he["splits"]}
    assert by_fit[(0, 1)]["loss"] > by_fit[(1, 2)]["loss"] >= 0  # testing on the odd fold costs most
    assert report["exclude"] == ["IDRiD_00"]
    bad = subprocess.run([sys.executable, str(tt), "--predictions", *map(str, files), "--fit", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least one of the 3 files" in bad.stderr
