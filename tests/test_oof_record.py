"""Out-of-fold figures recorded in a model folder's metrics.json (issue 13 item 5)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import benchmark_module, run_here
from lesionseg_training.oof_record import record_out_of_fold
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "oof_folds012.json"


def idrid_names(root: Path) -> None:
    """An IDRiD-layout folder of ten photos (IDRiD_01-10) and their hemorrhage masks, empty files:
    enough for the folds to split them by name."""
    for sub in ("images", "masks_HE"):
        (root / sub).mkdir()
    for k in range(1, 11):
        (root / "images" / f"IDRiD_{k:02d}.jpg").write_bytes(b"")
        (root / "masks_HE" / f"IDRiD_{k:02d}_HE.tif").write_bytes(b"")


def test_the_recipes_out_of_fold_figures_go_into_metrics_and_nothing_else_changes(tmp_path: Path,
                                                                                  tiny_model_dir: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    before = json.loads((folder / "metrics.json").read_text())
    report = json.loads(REPORT.read_text())
    out = run_here([sys.executable, "-m", "lesionseg_training.oof_record", "--model", str(folder),
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
    # no val_* figures in this folder: none are called in-sample
    assert metrics["figures"] == "out_of_fold: the recipe on photos its fold models never saw, each photo scored once"


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


def test_fold_scores_of_runs_on_noisy_masks_are_kept_apart_from_the_clean_runs(tmp_path: Path) -> None:
    """``oof_report --noise``: a fold trained on corrupted masks is kept under the run's own name
    (as ``compare_presets`` names the run) and never read back as the clean recipe's fold, nor
    the clean fold as the noisy one."""
    oof_report = benchmark_module("oof_report")
    noise = "missed=0.5,outline=8"
    noisy = {"model_sha256": "a", "scores": {"HE": {"per_image": []}}}
    clean = {"model_sha256": "b", "scores": {"HE": {"per_image": []}}}
    oof_report.keep_state(tmp_path, "default", 0, 1000, noisy, noise)
    assert (tmp_path / "default-f0-missed0.5_outline8-s1000.json").is_file()
    assert oof_report.kept_state(tmp_path, "default", 0, 1000) is None
    assert oof_report.kept_state(tmp_path, "default", 0, 1000, noise)["model_sha256"] == "a"
    oof_report.keep_state(tmp_path, "default", 0, 1000, clean)
    assert oof_report.kept_state(tmp_path, "default", 0, 1000)["model_sha256"] == "b"
    oof_report.keep_state(tmp_path, "default", 0, 1000, {**clean, "minutes": 1})  # the same model: updated
    assert oof_report.kept_state(tmp_path, "default", 0, 1000)["minutes"] == 1
    kept = (tmp_path / "default-f0-s1000.json").read_bytes()
    other = {"model_sha256": "c", "scores": {"HE": {"per_image": []}}}  # the recipe trained again elsewhere
    with pytest.raises(SystemExit, match="default-f0-s1000.json: keeps the scores of another model"):
        oof_report.keep_state(tmp_path, "default", 0, 1000, other)
    assert (tmp_path / "default-f0-s1000.json").read_bytes() == kept
    assert oof_report.kept_state(tmp_path, "default", 0, 1000, noise)["model_sha256"] == "a"
    # a noisy run's file renamed to the clean name is refused, not read as the clean fold
    shutil.copy(tmp_path / "default-f0-missed0.5_outline8-s1000.json", tmp_path / "default-f0-s1000.json")
    with pytest.raises(SystemExit, match="label noise missed=0.5,outline=8"):
        oof_report.kept_state(tmp_path, "default", 0, 1000)


def test_the_same_fold_models_scored_with_another_tta_are_kept_and_recorded_as_such(tmp_path: Path,
                                                                                     tiny_model_dir: Path) -> None:
    """``oof_report --variants default,default:hflip``: the second label is the same runs scored
    with 2-view TTA; its fold scores are kept apart from the model's own (the same weights, so
    only the name tells them apart) and a model folder recording it says which TTA scored it."""
    oof_report = benchmark_module("oof_report")
    assert oof_report.variant_steps("default_cameras@4000:hflip", 1000) == ("default_cameras", 4000, "hflip")
    assert oof_report.variant_steps("default", 1000) == ("default", 1000, None)
    with pytest.raises(SystemExit, match=r"a TTA \(none, hflip, flips\) or extra working grids"):
        oof_report.variant_steps("default:rot90", 1000)
    assert oof_report.variant_steps("multi_he_crops:grids704+1024", 4000) == ("multi_he_crops", 4000, "grids704+1024")
    assert oof_report.grids_view("grids704+1024") == [704, 1024] and oof_report.grids_view("hflip") is None
    with pytest.raises(SystemExit, match="grids<px>"):
        oof_report.variant_steps("default:grids704+x", 1000)
    own = {"model_sha256": "a", "scores": {"HE": {"per_image": [], "x": 1}}}
    two = {"model_sha256": "a", "scores": {"HE": {"per_image": [], "x": 2}}}
    oof_report.keep_state(tmp_path, "default", 0, 1000, own)
    oof_report.keep_state(tmp_path, "default", 0, 1000, two, tta="hflip")
    assert (tmp_path / "default-f0-s1000-tta-hflip.json").is_file()
    assert oof_report.kept_state(tmp_path, "default", 0, 1000)["scores"]["HE"]["x"] == 1
    assert oof_report.kept_state(tmp_path, "default", 0, 1000, tta="hflip")["scores"]["HE"]["x"] == 2
    assert oof_report.kept_state(tmp_path, "default", 0, 1000, tta="none") is None
    shutil.copy(tmp_path / "default-f0-s1000-tta-hflip.json", tmp_path / "default-f0-s1000.json")
    with pytest.raises(SystemExit, match="TTA hflip"):
        oof_report.kept_state(tmp_path, "default", 0, 1000)
    assert oof_report.scores_file(tmp_path, "hflip") != oof_report.scores_file(tmp_path)

    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    report = json.loads(REPORT.read_text())
    report["variants"]["default:hflip"] = {**report["variants"]["default"], "tta": "hflip"}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert "2-view (horizontal flip) TTA" in record_out_of_fold(folder, path, "default:hflip")["out_of_fold"]["scored"]
    assert "4-flip TTA" in record_out_of_fold(folder, path, "default")["out_of_fold"]["scored"]
    report["variants"]["pair:grids704+1024"] = {**report["variants"]["default"], "tta": "grids704+1024",
                                                "members": ["a", "b"]}
    path.write_text(json.dumps(report))
    assert "each with no TTA on its working grid and on grids of 704 and 1024 px across the disc, averaged" in \
        record_out_of_fold(folder, path, "pair:grids704+1024")["out_of_fold"]["scored"]


def test_every_variants_fold_split_loads_and_is_the_defaults(tmp_path: Path) -> None:
    """``oof_report`` (and ``--without``) re-split a fold's photos from the variant's recipe: a
    variant whose run needs more than the recipe names (a pseudo-label share needs the fold's
    pseudo-label folder) still splits, and every variant splits the photos as ``default`` does."""
    cp, oof_report = benchmark_module("compare_presets"), benchmark_module("oof_report")
    idrid_names(tmp_path)
    want = [p.id for p in oof_report.fold_pairs("default", 1, str(tmp_path))[1]]
    assert want == ["IDRiD_02", "IDRiD_07"]
    for variant in cp.VARIANTS:
        assert [p.id for p in oof_report.fold_pairs(variant, 1, str(tmp_path))[1]] == want, variant


def test_every_variant_is_scored_with_four_flips_whatever_the_shipped_config_runs() -> None:
    """The default config's models run 2 TTA views; the cross-validation's fold models are scored
    with 4 flips like every kept fold score, and without cameras unless the variant names them,
    so one variant name means one recipe and one scoring in every results file."""
    from lesionseg_training.train_config import load_config

    cp = benchmark_module("compare_presets")
    assert load_config("default", []).model.inference.tta == "hflip"
    for variant in cp.VARIANTS:
        base, overrides = cp.photo_recipe(variant)  # without a pseudo-label share (needs its folder)
        cfg = load_config(base, overrides)
        assert cfg.model.inference.tta == "flips", variant
        assert (cfg.data.cameras.share > 0) == variant.endswith(("cameras", "camB")), variant


def test_a_resumed_runs_minutes_are_its_trainings_not_the_last_parts(tmp_path: Path, monkeypatch) -> None:
    """``compare_presets.py --resume``: a run interrupted and finished in a later sitting (or a
    finished one rerun) reports the minutes its training took, from the trainer's clock carried
    across resumes, not those of the last invocation (a finished 4000-step run read 3.8 minutes)."""
    import argparse

    import lesionseg_training.trainer as trainer

    cp = benchmark_module("compare_presets")
    idrid_names(tmp_path)

    def finished_run(cfg, run_dir, pairs, resume, init_from):  # what a finished run's resume yields
        ev = {"event": "eval", "step": 4000, "elapsed": 2950.0, "val_aupr": 0.7, "val_dice": 0.6}
        run_dir.mkdir(parents=True)
        (run_dir / "events.jsonl").write_text(json.dumps(ev) + "\n")
        yield ev
        yield {"event": "done", "step": 4000, "elapsed": 3000.0}

    monkeypatch.setattr(trainer, "train", finished_run)
    args = argparse.Namespace(steps=4000, minutes=None, eval_every=250, seed=0, threads=None, cache=None,
                              snapshots=False, out=str(tmp_path / "runs"), noise=None, resume=True, full_res=False,
                              store_predictions=None, init=None)
    row = cp.run_one("default", 1, args, tmp_path, tmp_path)
    assert row["steps"] == 4000 and row["minutes"] == 50.0 and row["val_aupr"] == 0.7


def test_a_finished_runs_kept_scores_are_reported_on_resume_not_made_again(tmp_path: Path, tiny_model_dir: Path,
                                                                           monkeypatch) -> None:
    """``compare_presets.py --resume --full-res`` on a finished run whose ``oof_scores.json``
    holds its last model's scores: those are reported, nothing calibrated or scored again (its
    ``oof/`` folder, a student's teacher, is left as it is); scores of other weights are not."""
    import argparse

    import lesionseg_training.trainer as trainer
    from napari_lesionseg.core.metrics import Counts, DatasetScores, PooledPR

    cp = benchmark_module("compare_presets")
    idrid_names(tmp_path)
    run = tmp_path / "runs" / cp.run_name("default", 1, None, 4000)
    shutil.copytree(tiny_model_dir, run / "last")
    shutil.copytree(tiny_model_dir, run / "oof")
    he = DatasetScores(threshold=0.3, total=Counts(tp=60, fp=20, fn=20, tn=900), pr=PooledPR())
    he.pr.add(np.array([0.9, 0.8, 0.2, 0.1], np.float32), np.array([True, False, True, False]))
    state = {"model_sha256": cp.weights_sha256(run / "last"), "scores": {"HE": he.state()}, "lesions": None}
    (run / cp.OOF_SCORES).write_text(json.dumps(state))

    def finished_run(cfg, run_dir, pairs, resume, init_from):
        (run_dir / "events.jsonl").write_text(json.dumps({"event": "eval", "step": 4000, "val_aupr": 0.7}) + "\n")
        yield {"event": "done", "step": 4000, "elapsed": 3000.0}

    def scored_again(*_a, **_k):
        return {"fr_aupr": -1.0}

    monkeypatch.setattr(trainer, "train", finished_run)
    monkeypatch.setattr(cp, "full_resolution_report", scored_again)
    args = argparse.Namespace(steps=4000, minutes=None, eval_every=250, seed=0, threads=None, cache=None,
                              snapshots=False, out=str(tmp_path / "runs"), noise=None, resume=True, full_res=True,
                              store_predictions=None, init=None)
    before = (run / "oof" / "config.json").read_text()
    row = cp.run_one("default", 1, args, tmp_path, tmp_path)
    assert row["fr_aupr"] == pytest.approx(he.summary()["aupr"]) and row["fr_dice_ds"] == pytest.approx(0.75)
    assert row["fr_threshold"] == load_model_folder(run / "oof").config.inference.threshold
    assert (run / "oof" / "config.json").read_text() == before
    (run / cp.OOF_SCORES).write_text(json.dumps({**state, "model_sha256": "0" * 64}))  # another model's scores
    assert cp.run_one("default", 1, args, tmp_path, tmp_path)["fr_aupr"] == -1.0


def test_report_merges_runs_made_apart_and_compares_at_equal_steps(tmp_path: Path, capsys) -> None:
    """``compare_presets.py --report``: runs made two at a time into separate results files are
    tabled together, each fold's variants compared at the largest step all of them validated,
    and merged into one file without losing a run."""
    cp = benchmark_module("compare_presets")

    def run(variant: str, fold: int, curve: list[tuple[int, float]], fr: float) -> dict:
        return {"variant": variant, "fold": fold, "noise": "none", "steps": curve[-1][0],
                "val_aupr": curve[-1][1], "val_dice": curve[-1][1], "minutes": 15.0, "fr_aupr": fr,
                "fr_dice_ds": fr, "fr_dice_img": fr, "minutes_budget": 15.0, "steps_budget": 0,
                "curve": [{"step": s, "val_aupr": a, "val_dice": a} for s, a in curve]}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"runs": [run("standard", 0, [(200, 0.1), (400, 0.3), (600, 0.5)], 0.6)]}))
    b.write_text(json.dumps({"runs": [run("sgdc", 0, [(200, 0.2), (400, 0.4)], 0.5),
                                      run("sgdc", 1, [(200, 0.3)], 0.7)]}))
    merged = tmp_path / "merged.json"
    cp.report([str(a), str(b), str(a)], str(merged))  # a file given twice counts once
    out = capsys.readouterr().out
    table = out.split("full resolution")[0].splitlines()
    rows = {line.split()[0]: line.split() for line in table if line.split()[:1] in (["standard"], ["sgdc"])}
    assert rows["standard"][6:8] == ["400", "0.300"]  # fold 0 at step 400, the last step sgdc validated
    assert rows["sgdc"][1] == "2" and "0.600 ± 0.141" in out  # sgdc's full-res AUPR over its two folds
    assert len(json.loads(merged.read_text())["runs"]) == 3



def test_figures_say_what_each_group_rests_on() -> None:
    """A folder calibrated out of fold (the shipped default: no ``val_*`` of its own) is not
    said to have in-sample figures; a trained folder's ``val_*`` are."""
    from lesionseg_training.oof_record import figures_note

    shipped = {"calibration": {"val_aupr_raw_256bins": 0.55, "fitted_on": "out_of_fold"}, "out_of_fold": {}}
    note = figures_note(shipped)
    assert "in-sample" not in note and note.startswith("calibration.val_*: the recipe's fold models'")
    assert "out_of_fold: " in note
    trained = {"val_images": ["a"], "val_aupr": 0.5, "calibration": {"val_aupr_raw_256bins": 0.5}, "out_of_fold": {}}
    note = figures_note(trained)
    assert note.startswith("val_*: the validation photos") and note.count("in-sample") == 2
    assert figures_note({"val_images": ["a"]}) == ""


def _fold_state(seed: int, shift: float) -> dict:
    """A fold's kept scores as ``oof_report`` keeps them: three photos' hemorrhage and optic-disc
    pixels scored (``shift`` moves the probabilities towards the truth)."""
    import numpy as np

    from napari_lesionseg.core.metrics import DatasetScores

    rng = np.random.default_rng(seed)
    scores = {}
    for t in ("HE", "OD"):
        ds = DatasetScores(threshold=0.5, pr_bins=256)
        for i in range(3):
            gt = rng.random((32, 32)) < 0.2
            ds.add(f"IDRiD_{seed:02d}{i}", np.clip(rng.random((32, 32)) * 0.7 + shift * gt, 0, 1), gt,
                   with_hd95=False)
        scores[t] = ds.state()
    return {"model_sha256": f"m{seed}", "scores": scores}


def test_folds_kept_in_two_folders_pool_into_one_report(tmp_path: Path) -> None:
    """``oof_report --keep A B``: each fold read from the first folder that has it (folds of one
    recipe scored on two machines, kept apart), the report saying where each came from; with
    ``--paired`` every output's fold-by-fold difference and its mean."""
    oof_report = benchmark_module("oof_report")
    first, second = tmp_path / "xeon", tmp_path / "zen4"
    for fold in (0, 1):  # fold 0 only in the second folder; fold 1 in both: the first's wins
        oof_report.keep_state(second, "default", fold, 1000, _fold_state(fold, 0.1))
        oof_report.keep_state(second, "multi_he_crops", fold, 1000, _fold_state(10 + fold, 0.3))
    oof_report.keep_state(first, "multi_he_crops", 1, 1000, _fold_state(21, 0.5))
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(Path(oof_report.__file__)), "--runs", str(tmp_path / "no_runs"),
                          "--variants", "default,multi_he_crops", "--folds", "0,1", "--steps", "1000",
                          "--keep", str(first), str(second), "--paired", "default,multi_he_crops", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    multi = report["variants"]["multi_he_crops"]
    assert multi["folds"] == [0, 1] and multi["scores_from"] == [str(second), str(first)]
    assert report["variants"]["default"]["scores_from"] == [str(second)] * 2
    base = report["variants"]["default"]
    diff = report["paired"]["fold_difference"]
    assert set(diff) == {"HE", "OD"} and diff["OD"]["figure"] == "dataset Dice"
    want = [b - a for a, b in zip(base["HE"]["fold_aupr"], multi["HE"]["fold_aupr"])]
    assert diff["HE"]["per_fold"] == pytest.approx(want) and diff["HE"]["mean"] == pytest.approx(sum(want) / 2)
    assert all(d > 0 for d in want)  # the probabilities shifted further towards the truth rank it better
    assert report["paired"]["fold_aupr_difference"] == diff["HE"]["per_fold"]
    assert "OD dataset Dice per fold: " in run.stdout and "no run folder, its kept scores from" in run.stdout
