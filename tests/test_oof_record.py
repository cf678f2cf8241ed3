"""Out-of-fold figures recorded in a model folder's metrics.json (issue 13 item 5)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lesionseg_training.oof_record import record_out_of_fold
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "oof_folds012.json"


def test_the_recipes_out_of_fold_figures_go_into_metrics_and_nothing_else_changes(tmp_path: Path,
                                                                                  tiny_model_dir: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    before = json.loads((folder / "metrics.json").read_text())
    report = json.loads(REPORT.read_text())
    out = subprocess.run([sys.executable, "-m", "lesionseg_training.oof_record", "--model", str(folder),
                          "--report", str(REPORT), "--variant", "multi_he_crops", "--note", "longer run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    metrics = load_model_folder(folder).metrics
    assert {k: metrics[k] for k in before} == before  # every figure it had, kept
    oof = metrics["out_of_fold"]
    want = report["variants"]["multi_he_crops"]
    assert oof["recipe"] == "multi_he_crops" and oof["folds"] == want["folds"] and oof["note"] == "longer run"
    assert oof["outputs"]["HE"]["aupr"] == want["HE"]["aupr"] and oof["outputs"]["MA"]["aupr"] == want["MA"]["aupr"]
    assert oof["outputs"]["HE"]["dice_per_image"] == want["HE"]["dice_img"]
    assert oof["outputs"]["HE"]["lesion_recall"] == want["HE"]["lesion_recall"]
    assert f"{oof['outputs']['HE']['aupr']:.3f}" in out.stdout
    assert "in-sample" in metrics["figures"]


def test_a_recipe_at_another_step_budget_records_its_own(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``default@2000`` in a report run with ``--steps 1000``: the block says 2000."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    report = REPORT.parent / "oof_steps_1000_vs_2000.json"
    assert json.loads(report.read_text())["steps"] == 1000
    assert record_out_of_fold(folder, report, "default@2000")["out_of_fold"]["steps"] == 2000
    assert record_out_of_fold(folder, report, "default@1000")["out_of_fold"]["steps"] == 1000


def test_a_report_without_the_recipe_names_the_file_and_changes_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    before = (folder / "metrics.json").read_bytes()
    with pytest.raises(LesionsegInputError, match=r"oof_folds012\.json: has no recipe 'nope' \(it has: default, "):
        record_out_of_fold(folder, REPORT, "nope")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(LesionsegInputError, match="broken.json: is not a readable out-of-fold report"):
        record_out_of_fold(folder, broken, "default")
    assert (folder / "metrics.json").read_bytes() == before
