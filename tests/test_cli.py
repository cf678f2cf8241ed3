"""The real ``lesionseg`` command on real (downscaled) photos: its ``main`` (argument parsing,
error policy, output) in this process, and as the installed console script in a subprocess
where the process is what is tested (the entry point, exit codes, signals, a whole flow)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_here
from napari_lesionseg.core.image_io import read_mask
from napari_lesionseg.core.model_folder import load_model_folder

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}


def lesionseg(*args: str | Path, timeout: float = 300, process: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``lesionseg ARGS``: ``process``, the console script in a subprocess; otherwise its
    ``main`` in this process (``helpers.run_here``)."""
    if process:
        exe = shutil.which("lesionseg", path=str(Path(sys.executable).parent)) or shutil.which("lesionseg")
        cmd = [exe] if exe else [sys.executable, "-m", "napari_lesionseg.cli"]
        return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)
    return run_here([sys.executable, "-m", "napari_lesionseg.cli", *map(str, args)])


def test_console_script_is_installed() -> None:
    r = lesionseg("--help", process=True)
    assert r.returncode == 0 and "predict" in r.stdout and "finetune" in r.stdout


def test_predict_writes_outputs_at_input_size_and_keeps_going(tmp_path: Path, small_pairs: Path,
                                                              tiny_model_dir: Path) -> None:
    imgs = tmp_path / "in"
    shutil.copytree(small_pairs / "images", imgs)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    r = lesionseg("predict", imgs, "--out", out, "--model", tiny_model_dir, "--keep-going", "--quiet", process=True)
    assert r.returncode == 1, r.stderr
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    for stem in ("IDRiD_04", "IDRiD_16"):
        w, h = Image.open(imgs / f"{stem}.jpg").size
        for kind, mode in (("mask", "L"), ("prob", "L"), ("fuzzy", "I;16")):  # the fuzzy map in 16 bits
            im = Image.open(out / f"{stem}_{kind}.png")
            assert im.size == (w, h) and im.mode == mode
        assert set(np.unique(np.asarray(Image.open(out / f"{stem}_mask.png")))) <= {0, 255}
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["image"]: r["status"] for r in rows} == {"IDRiD_04.jpg": "ok", "IDRiD_16.jpg": "ok", "broken.jpg": "failed"}
    header = open(out / "lesions.csv").readline().strip().split(",")
    assert header[:4] == ["image", "id", "area_px", "area_mm2"]
    assert header[-1] == "field_r"  # for every model: a lesion's place in the round field of view
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files


def test_a_second_run_into_the_same_folder_adds_to_its_tables(tmp_path: Path, small_pairs: Path,
                                                              multi_model_dir: Path) -> None:
    """Predicting IDRiD_04, then IDRiD_16 and a broken file into one folder: the tables describe
    both photos; predicting IDRiD_04 again replaces its rows, not IDRiD_16's; a table that is not
    ours is kept beside, renamed."""
    imgs, out = small_pairs / "images", tmp_path / "out"

    def run(*photos: Path) -> None:
        r = lesionseg("predict", *photos, "--out", out, "--model", multi_model_dir, "--keep-going", "--quiet",
                      "--tta", "none")  # a model that finds a lesion (an exudate) in every photo
        assert "Traceback" not in r.stderr, r.stderr

    def table(name: str) -> list[dict[str, str]]:
        return list(csv.DictReader(open(out / name)))

    run(imgs / "IDRiD_04.jpg")
    first = [r for r in table("lesions.csv") if r["image"] == "IDRiD_04.jpg"]
    assert first
    broken = tmp_path / "IDRiD_04.png"  # the same stem as a photo already there, unreadable
    broken.write_bytes(b"not a png")
    run(imgs / "IDRiD_16.jpg", broken)
    status = {r["image"]: r["status"] for r in table("summary.csv")}
    assert status == {"IDRiD_04.jpg": "ok", "IDRiD_16.jpg": "ok"}  # IDRiD_04's outputs are the first run's
    assert [r for r in table("lesions.csv") if r["image"] == "IDRiD_04.jpg"] == first
    sixteen = [r for r in table("lesions.csv") if r["image"] == "IDRiD_16.jpg"]
    assert sixteen
    (out / "summary.csv").write_text("not, a table\nof ours\n")
    run(imgs / "IDRiD_04.jpg")
    assert [r["image"] for r in table("summary.csv")] == ["IDRiD_04.jpg"]
    assert (out / "summary.unreadable-1.csv").read_text() == "not, a table\nof ours\n"
    lesions = table("lesions.csv")
    assert [r for r in lesions if r["image"] == "IDRiD_16.jpg"] == sixteen
    assert [r for r in lesions if r["image"] == "IDRiD_04.jpg"] == first  # the same photo, the same model
    assert all(0.0 <= float(r["field_r"]) <= 1.05 for r in lesions)  # placed in the field, disc or none


def test_predicting_a_folder_into_itself_again_predicts_its_photos_only(tmp_path: Path, small_pairs: Path,
                                                                        multi_model_dir: Path) -> None:
    """Once, the second run took the first run's ``_prob``, ``_fuzzy`` and ``_EX_prob`` maps for photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(small_pairs / "images" / "IDRiD_04.jpg", folder)
    for _ in range(2):
        r = lesionseg("predict", folder, "--out", folder, "--model", multi_model_dir, "--quiet", "--tta", "none")
        assert r.returncode == 0 and "1 of 1 images" in r.stdout, r.stdout + r.stderr
        assert "no optic-disc output" not in r.stdout  # the five-output model has one
    assert (folder / "IDRiD_04_EX_prob.png").exists() and (folder / "IDRiD_04_OD_mask.png").exists()
    assert not list(folder.glob("*_prob_*")) and not list(folder.glob("*_fuzzy_*"))
    assert [r["image"] for r in csv.DictReader(open(folder / "summary.csv"))] == ["IDRiD_04.jpg"]


def test_bad_file_without_keep_going_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    r = lesionseg("predict", bad, "--out", tmp_path / "o", "--model", tiny_model_dir, "--quiet", process=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {bad}: file is empty (0 bytes)"]  # once, not twice
    r = lesionseg("predict", bad, "--out", tmp_path / "o", "--model", tmp_path / "no-model", "--quiet")
    assert r.returncode == 2 and "model folder does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_run_that_goes_on_tells_why_a_photo_the_stopped_run_left_failed(tmp_path: Path, small_pairs: Path,
                                                                        tiny_model_dir: Path) -> None:
    """A run stopped at a bad file marks the photos after it ``not run (stopped)``; run again with
    --keep-going, the table kept that line instead of saying why the photo failed (a blank
    capture) or that it is now done."""
    from PIL import Image

    imgs, out = tmp_path / "in", tmp_path / "out"
    imgs.mkdir()
    (imgs / "a_empty.jpg").write_bytes(b"")
    Image.new("RGB", (600, 400)).save(imgs / "b_black.jpg")  # a failed capture
    shutil.copy(small_pairs / "images" / "IDRiD_04.jpg", imgs / "c_photo.jpg")
    r = lesionseg("predict", imgs, "--out", out, "--model", tiny_model_dir, "--quiet", "--tta", "none")
    assert r.returncode == 2
    status = {r["image"]: r["status"] for r in csv.DictReader(open(out / "summary.csv"))}
    assert status == {"a_empty.jpg": "failed", "b_black.jpg": "not run (stopped)", "c_photo.jpg": "not run (stopped)"}
    r = lesionseg("predict", imgs, "--out", out, "--model", tiny_model_dir, "--quiet", "--tta", "none", "--keep-going")
    assert r.returncode == 1 and f"error: {imgs / 'b_black.jpg'}: shows no fundus: the image is blank (black" in r.stderr
    rows = {r["image"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert {k: v["status"] for k, v in rows.items()} == {"a_empty.jpg": "failed", "b_black.jpg": "failed",
                                                         "c_photo.jpg": "ok"}
    assert "the image is blank" in rows["b_black.jpg"]["error"] and not (out / "b_black_mask.png").exists()


def test_evaluate_on_photos_without_lesions_counts_the_false_alarms(tmp_path: Path, small_pairs: Path,
                                                                    multi_model_dir: Path) -> None:
    """Healthy photos (masks without a lesion) were scored AUPR nan, recall 0.0000 and Dice 0
    or 1, and a type absent from every photo Dice 1.0000 beside AUPR nan: figures that say
    nothing true. Now the scores say there is nothing to find and count the false alarms,
    as many pixels as the masks ``predict`` writes hold."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for f in (small_pairs / "masks").iterdir():  # IDRiD_04_HE.png ...: no hemorrhage, no hard exudate
        blank = Image.fromarray(np.zeros_like(np.asarray(Image.open(f))))
        blank.save(masks / f.name)
        blank.save(masks / f.name.replace("_HE", "_EX"))
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", masks, "--model", multi_model_dir,
                  "--lesions", "HE,EX", "--quiet", "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    firsts = {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()}
    assert "nan" not in r.stdout and not firsts & {"aupr", "dice_ds", "recall_ds", "hd95"}, r.stdout
    assert ("hemorrhages: none in the masks of these 2 photo(s) (AUPR, Dice and recall need one); false alarms: "
            "0 lesion(s), 0 px, on 0 of the photos") in r.stdout
    r2 = lesionseg("predict", small_pairs / "images", "--out", tmp_path / "o", "--model", multi_model_dir, "--quiet")
    assert r2.returncode == 0, r2.stderr
    marked = sum(int(np.count_nonzero(read_mask(f))) for f in (tmp_path / "o").glob("*_EX_mask.png"))
    assert marked > 0  # the model's hard exudate covers the disc
    row = next(ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] == ["EX"])
    assert row == ["EX", "2", "-", "-", "-"], r.stdout
    assert f"EX: none in the masks of these 2 photo(s) (AUPR, Dice and recall need one); false alarms: {marked} px, " \
           "on 2 of the photos" in r.stdout
    assert "missed lesions (0) in the first 20 regions" in r.stdout  # nothing to reach: '-', not nan


def test_evaluate_prints_and_writes_report(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "rep" / "metrics.json"
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--model", tiny_model_dir, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "aupr" in r.stdout and "dice_ds" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["summary"]["images"] == 2 and len(rep["per_image"]) == 2
    assert 0 <= rep["summary"]["aupr"] <= 1
    own = json.loads((tiny_model_dir / "config.json").read_text())
    assert (rep["tta"], rep["grids"]) == (own["inference"]["tta"], [own["preprocess"]["fov_diameter"]])  # how it ran
    assert rep["precision"] in {"fp32", "bf16"}  # the arithmetic used, not the option ("auto")
    assert 0 <= rep["fuzzy_area_fraction"] <= 1 and "fuzzy_error_capture" in r.stdout
    assert 0 <= rep["lesion_recall"] <= 1 and rep["gt_lesions"] > 0 and "lesion_recall" in r.stdout
    # the fuzzy map beside the entropy of the same probability: wrong pixels in the top k %, queue reach
    assert "wrong pixels in the top 5 % of the disc" in r.stdout and "missed lesions (" in r.stdout
    for name in ("fuzzy", "entropy"):
        caps = [rep[f"{name}_top{k}pct_error_capture"] for k in (1, 5, 10)]
        assert all(0 <= c <= 1 for c in caps) and caps == sorted(caps)
        assert rep[f"{name}_queue_missed_lesions"] >= 0 and f"{name}_queue_false_alarms_shown" in rep
    assert (out.parent / "metrics_pr.png").stat().st_size > 1000
    assert len((out.parent / "metrics_per_image.csv").read_text().splitlines()) == 3
    # a folder as --out holds metrics.json and its two companions (it failed after the whole
    # evaluation, "<temp file> -> rep2: Is a directory"); a place no file can go fails first
    (tmp_path / "rep2").mkdir()
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--model", tiny_model_dir, "--out", tmp_path / "rep2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in (tmp_path / "rep2").iterdir()) == ["metrics.json", "metrics_per_image.csv",
                                                                      "metrics_pr.png"]
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--model", tiny_model_dir, "--out", tmp_path / "new" / "results", "--quiet")  # no suffix: a folder
    assert r.returncode == 0 and (tmp_path / "new" / "results" / "metrics.json").is_file(), r.stderr
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--model", tiny_model_dir, "--out", out / "x.json")
    assert "is a file, not a folder" in _one_clear_line(r, str(out)) and "%|" not in r.stderr  # before any photo


def test_sixteen_bit_probabilities_and_evaluate_scores_what_the_files_hold(tmp_path: Path, small_pairs: Path,
                                                                         tiny_model_dir: Path) -> None:
    """``--prob-bits 16``: ``<stem>_prob.png`` holds round(65535 p), within one 8-bit step of the
    8-bit file and with more distinct values, and ``summary.csv`` says the depth; ``evaluate
    --prob-bits 16`` scores what those files hold (its pooled AUPR is the one drawn from the written
    16-bit PNGs); another depth is refused before any work."""
    from napari_lesionseg.core.image_io import read_unit_map
    from napari_lesionseg.core.metrics import DatasetScores

    imgs = small_pairs / "images"
    for bits in ("8", "16"):
        r = lesionseg("predict", imgs, "--out", tmp_path / bits, "--model", tiny_model_dir, "--quiet", "--prob-bits", bits)
        assert r.returncode == 0, r.stderr
        assert next(csv.DictReader(open(tmp_path / bits / "summary.csv")))["prob_bits"] == bits
    files = DatasetScores(threshold=0.5, pr_bins=65536)
    for stem in ("IDRiD_04", "IDRiD_16"):
        p8 = np.asarray(Image.open(tmp_path / "8" / f"{stem}_prob.png")).astype(np.int64)
        im16 = Image.open(tmp_path / "16" / f"{stem}_prob.png")
        p16 = np.asarray(im16).astype(np.int64)
        assert im16.mode == "I;16" and p16.shape == p8.shape
        assert np.abs(np.rint(p16 * 255 / 65535) - p8).max() <= 1
        assert len(np.unique(p16)) > len(np.unique(p8))
        gt = read_mask(small_pairs / "masks" / f"{stem}_HE.png")
        files.add(stem, read_unit_map(tmp_path / "16" / f"{stem}_prob.png"), gt == 1, gt != 255, with_hd95=False)
    out = tmp_path / "rep" / "metrics.json"
    r = lesionseg("evaluate", "--images", imgs, "--masks", small_pairs / "masks", "--model", tiny_model_dir,
                  "--out", out, "--quiet", "--prob-bits", "16")
    assert r.returncode == 0 and "scored as 16-bit PNGs" in r.stdout, r.stderr
    rep = json.loads(out.read_text())
    assert rep["prob_bits"] == 16
    assert rep["summary"]["aupr"] == pytest.approx(files.summary()["aupr"], abs=1e-6)
    r = lesionseg("predict", imgs, "--out", tmp_path / "never", "--model", tiny_model_dir, "--prob-bits", "12")
    assert r.returncode == 2 and "--prob-bits" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "never").exists()


def test_evaluate_unmatched_masks_listed(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(small_pairs / "masks", masks)
    (masks / "IDRiD_16_HE.png").unlink()
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", masks, "--model", tiny_model_dir)
    assert r.returncode == 2 and "images without a mask: IDRiD_16.jpg" in r.stderr
    (masks / "IDRiD_04_HE.tif").write_bytes(b"an older export")  # once taken over the PNG without a word
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", masks, "--model", tiny_model_dir,
                  "--keep-going")
    assert r.returncode == 2 and "one photo, two masks: IDRiD_04_HE.png and IDRiD_04_HE.tif; keep one" in r.stderr


def test_an_idrid_layout_folder_is_scored_and_fine_tuned_without_masks(tmp_path: Path, small_pairs: Path,
                                                                      tiny_model_dir: Path) -> None:
    """``train --images`` took IDRiD's folder as IDRiD ships it (images/ beside masks_HE/, ...);
    ``evaluate`` and ``finetune`` said "give --images and --masks" / "--masks is required". All
    three take it now; a plain folder without --masks says what to give."""
    root = tmp_path / "idrid"
    shutil.copytree(small_pairs / "images", root / "images")
    shutil.copytree(small_pairs / "masks", root / "masks_HE")
    (root / "images" / "IDRiD_43.jpg").write_bytes((small_pairs / "images" / "IDRiD_04.jpg").read_bytes())  # no mask
    r = lesionseg("evaluate", "--images", root, "--model", tiny_model_dir, "--quiet")
    assert r.returncode == 0 and "on 2 images" in r.stdout, r.stderr
    r = lesionseg("finetune", "--images", root, "--model", tiny_model_dir, "--steps", "1", "--out", tmp_path / "v2",
                  timeout=600)
    assert r.returncode == 0 and (tmp_path / "v2" / "weights.safetensors").is_file(), r.stderr
    _one_clear_line(lesionseg("evaluate", "--images", small_pairs / "images", "--model", tiny_model_dir),
                    "images", "give --masks too", "IDRiD-layout")


def test_a_project_folder_trains_as_its_corrections(tmp_path: Path, small_pairs: Path) -> None:
    """``train --images PROJECT`` asked for --masks; it now trains on the project's latest
    corrections, as ``data.layout = "corrections"`` did, and refuses corrections that speak for
    none of the network's outputs before a run folder is made (it trained on nothing)."""
    import numpy as np

    from napari_lesionseg.core.lesion_types import TYPE_VALUE
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    for img in sorted((small_pairs / "images").iterdir()):
        proj.save_label(proj.add_image(img), read_mask(small_pairs / "masks" / f"{img.stem}_HE.png"))
    r = lesionseg("train", "--config", "tiny", "--images", proj.root, "--steps", "2", "--out", tmp_path / "r1",
                  "--quiet", timeout=600)
    assert r.returncode == 0 and (tmp_path / "r1" / "best" / "weights.safetensors").is_file(), r.stderr
    for iid in proj.image_ids():
        he = proj.latest_label(iid)
        proj.save_label(iid, np.where(he == 1, TYPE_VALUE["MA"], 0).astype(np.uint8), types=["MA"])
    _one_clear_line(lesionseg("train", "--config", "tiny", "--images", proj.root, "--steps", "2", "--out",
                              tmp_path / "r2"), "reviewed for HE; they speak for MA only", "nothing to train on")
    assert not (tmp_path / "r2").exists()


def test_train_tiny_then_predict_with_its_best_model(tmp_path: Path, small_pairs: Path) -> None:
    run = tmp_path / "run"
    r = lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--steps", "4", "--out", run, "--quiet", process=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"best model: {run / 'best'}"  # one photo of two held out
    model = load_model_folder(run / "best")
    assert model.metrics["step"] in (3, 4) and "val_aupr" in model.metrics  # evaluated at 3 and at the end
    assert load_model_folder(run / "last").metrics["step"] == 4
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-1] == "done"
    r = lesionseg("predict", small_pairs / "images" / "IDRiD_16.jpg", "--out", tmp_path / "o", "--model",
                  run / "best", "--quiet")
    assert r.returncode == 0, r.stderr
    assert read_mask(tmp_path / "o" / "IDRiD_16_mask.png").shape == (356, 536)
    # one photo: it validates and trains, and the last line says so (it was only in the data event)
    one = tmp_path / "one"
    for sub in ("images", "masks"):
        shutil.copytree(small_pairs / sub, one / sub, ignore=shutil.ignore_patterns("IDRiD_04*"))
    r = lesionseg("train", "--config", "tiny", "--images", one / "images", "--masks", one / "masks",
                  "--steps", "1", "--out", tmp_path / "run1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("(chosen on photos it also trained on, too few to hold one out: its validation "
                                     "scores are optimistic)"), r.stdout
    # a warm start from that model folder records where it came from; --final trains on both photos
    r = lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--steps", "2", "--init", run / "best", "--out", tmp_path / "run2", "--quiet", "--final")
    assert r.returncode == 0, r.stderr
    assert "optimistic" not in r.stdout  # a final model validates on its training photos by design
    final = load_model_folder(tmp_path / "run2" / "best")
    lineage = final.lineage
    assert lineage["parent_path"] == str(run / "best") and lineage["parent_weights_sha256"] == model.config.weights_sha256
    assert set(lineage["data"]) == {"IDRiD_04", "IDRiD_16"} and final.metrics["val_in_sample"] is True
    assert len(model.lineage["data"]) == 1  # without --final one of the two photos validates


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_is_never_trained_over_and_resumes_with_its_own_recipe(tmp_path: Path, small_pairs: Path) -> None:
    """A researcher who forgets --resume, or resumes with another config, loses nothing: the run's
    folder is left byte for byte; --resume alone continues it with the recipe it started with."""
    run, data = tmp_path / "run", ["--images", small_pairs / "images", "--masks", small_pairs / "masks"]
    r = lesionseg("train", "--config", "tiny", *data, "--steps", "3", "--set", "optim.lr=0.002", "--out", run, "--quiet")
    assert r.returncode == 0, r.stderr
    before = _files(run)
    _one_clear_line(lesionseg("train", "--config", "tiny", *data, "--steps", "6", "--out", run, "--quiet"),
                    str(run), "holds a training run (its log reaches step 3)", "--resume continues it")
    _one_clear_line(lesionseg("train", "--config", "tiny", *data, "--steps", "6", "--out", run, "--resume", "--quiet"),
                    str(run / "config.json"), "differs in optim.lr;", "leave out --config")
    _one_clear_line(lesionseg("train", "--config", "default", *data, "--steps", "6", "--out", run, "--resume"),
                    "model.network.widths")
    _one_clear_line(lesionseg("train", "--steps", "6", "--out", tmp_path / "typo", "--resume"),
                    str(tmp_path / "typo"), "holds no training run to resume")
    _one_clear_line(lesionseg("train", *data, "--steps", "6", "--out", tmp_path / "new"), "--config is required")
    # no time at all is a typo, not a run (it once trained a step and wrote a "best model")
    _one_clear_line(lesionseg("train", "--config", "tiny", *data, "--minutes", "0", "--out", tmp_path / "new"),
                    "run.minutes", "more than 0")
    assert _files(run) == before and not (tmp_path / "typo").exists() and not (tmp_path / "new").exists()

    r = lesionseg("train", "--out", run, "--resume", "--steps", "6", "--set", "run.threads=1")
    assert r.returncode == 0, r.stderr
    assert "resumed: step=3" in r.stdout and re.search(r"done: step=6, .*elapsed=\d+s,", r.stdout), r.stdout
    assert load_model_folder(run / "last").metrics["step"] == 6
    saved = json.loads((run / "config.json").read_text())
    assert saved["optim"]["lr"] == 0.002 and saved["run"]["steps"] == 6 and saved["run"]["threads"] == 1
    # the run folder given as the model: where its model is, not a file it does not expect
    _one_clear_line(lesionseg("predict", small_pairs / "images", "--model", run, "--out", tmp_path / "o"),
                    f"{run}: is a training run's folder, not a model folder: its model is {run / 'best'}")


def test_train_init_refuses_a_different_network(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    r = lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--steps", "2", "--init", tiny_model_dir, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "model.network differs" in r.stderr and not (tmp_path / "run").exists()


def test_train_init_from_an_ensemble_says_how(tmp_path: Path, small_pairs: Path) -> None:
    """The shipped default averages two networks: a warm start from it into a one-network
    config is refused with the setting that makes it work, and nothing is written."""
    r = lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", small_pairs / "masks",
                  "--steps", "2", "--init", "default", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "--set model.network.members=2" in r.stderr and not (tmp_path / "run").exists()


def test_train_and_evaluate_refuse_an_inverted_mask_naming_it(tmp_path: Path, small_pairs: Path,
                                                              tiny_model_dir: Path) -> None:
    """A mask with lesions black on white was trained on, and scored against, without a word."""
    masks = tmp_path / "masks"
    shutil.copytree(small_pairs / "masks", masks)
    m = read_mask(masks / "IDRiD_16_HE.png")
    Image.fromarray(np.where(m == 1, 0, 255).astype(np.uint8)).save(masks / "IDRiD_16_HE.png")
    r = lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", masks,
                  "--steps", "2", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "IDRiD_16_HE.png: marks" in r.stderr and "is the mask inverted" in r.stderr, r.stderr
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", masks, "--model", tiny_model_dir,
                  "--keep-going", "--quiet")
    assert r.returncode == 1 and "IDRiD_16_HE.png: marks" in r.stderr and "is the mask inverted" in r.stderr, r.stderr
    assert "on 1 images" in r.stdout  # the other photo is scored


def test_an_inverted_mask_of_another_type_is_refused_naming_it(tmp_path: Path, small_typed_pairs: Path,
                                                               multi_model_dir: Path) -> None:
    """The inverted-mask check covered the hemorrhage masks only: an inverted exudate or disc
    mask was scored against (and trained on) as the truth. A type asked for with no masks at all
    is said not scored."""
    masks = tmp_path / "masks"
    shutil.copytree(small_typed_pairs / "masks", masks)
    (tmp_path / "he_only").mkdir()
    for f in masks.glob("*_HE.png"):
        shutil.copy(f, tmp_path / "he_only" / f.name)
    m = read_mask(masks / "IDRiD_16_OD.png")
    Image.fromarray(np.where(m == 1, 0, 255).astype(np.uint8)).save(masks / "IDRiD_16_OD.png")
    r = lesionseg("evaluate", "--images", small_typed_pairs / "images", "--masks", masks, "--model", multi_model_dir,
                  "--lesions", "EX,OD", "--keep-going", "--quiet")
    assert r.returncode == 1, r.stderr
    assert "IDRiD_16_OD.png: marks" in r.stderr and "as optic disc: is the mask inverted" in r.stderr, r.stderr
    assert "on 1 images" in r.stdout
    # a type asked for whose masks are not there is said not scored (it was left out without a word)
    r = lesionseg("evaluate", "--images", small_typed_pairs / "images", "--masks", small_typed_pairs / "masks",
                  "--model", multi_model_dir, "--lesions", "EX,SE", "--quiet")
    assert r.returncode == 0 and "not scored" not in r.stdout, r.stderr
    r = lesionseg("evaluate", "--images", small_typed_pairs / "images", "--masks", tmp_path / "he_only",
                  "--model", multi_model_dir, "--lesions", "EX,SE", "--quiet")
    assert r.returncode == 0 and "not scored: EX, SE: no photo has a mask of that type" in r.stdout, r.stderr


def test_train_refuses_bad_config(tmp_path: Path, small_pairs: Path, monkeypatch) -> None:
    r = lesionseg("train", "--config", "tiny", "--set", "data.batch_size=0", "--images", tmp_path, "--out", tmp_path / "r")
    assert r.returncode == 2 and "data.batch_size" in r.stderr
    r = lesionseg("train", "--config", "no-such-preset", "--out", tmp_path / "r")
    assert r.returncode == 2 and "config file not found" in r.stderr
    # a folder named like a preset where the command runs ('tiny: Is a directory'): the preset is meant
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    _one_clear_line(lesionseg("train", "--config", str(small_pairs), "--out", tmp_path / "r"), str(small_pairs),
                    "a folder, not a TOML config file (presets: ")
    # masks without any lesion (healthy photos): a run trained on them, its validation Dice 1.0 and AUPR NaN
    # (written as NaN into metrics.json), and a "best model" that finds nothing
    blank = tmp_path / "blank"
    blank.mkdir()
    for f in (small_pairs / "masks").iterdir():
        Image.fromarray(np.zeros_like(np.asarray(Image.open(f)))).save(blank / f.name)
    line = _one_clear_line(lesionseg("train", "--config", "tiny", "--images", small_pairs / "images", "--masks", blank,
                                     "--steps", "2", "--out", tmp_path / "healthy"), str(blank),
                           "none of the 2 masks marks a lesion of a type this network learns (HE)")
    assert "add photos with lesions" in line and not (tmp_path / "healthy").exists()


def test_predict_without_model_uses_the_shipped_default(tmp_path: Path, small_pairs: Path) -> None:
    from napari_lesionseg.core.bundled import default_model_dir

    default = load_model_folder(default_model_dir())
    assert default.version == "default" and default.metrics["out_of_fold"]["outputs"]["HE"]["aupr"] > 0.3
    r = lesionseg("predict", small_pairs / "images" / "IDRiD_16.jpg", "--out", tmp_path, "--quiet", "--tta", "none")
    assert r.returncode == 0, r.stderr
    assert "model 'default'" in r.stdout
    assert r.stdout.count("model 'default' has no optic-disc output; od_distance_dd and zone are measured from "
                          "the disc the bundled 'multi' model") == 1
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert rows[0]["model"] == "default" and rows[0]["status"] == "ok"
    # where the disc and fovea are (input pixels of the 536x356 photo) and how each was placed
    assert rows[0]["disc_from"] == "bundled multi model"
    assert rows[0]["fovea_method"] in ("found in the photo", "estimated from the disc")
    disc = [float(rows[0][k]) for k in ("disc_y", "disc_x", "disc_diameter_px", "fovea_y", "fovea_x")]
    assert 0 < disc[0] < 356 and 0 < disc[1] < 536 and 20 < disc[2] < 120 and abs(disc[4] - disc[1]) > disc[2]
    lesions = list(csv.DictReader(open(tmp_path / "lesions.csv")))
    assert lesions and all(float(row["od_distance_dd"]) > 0 and row["zone"] for row in lesions)  # every lesion placed
    plain = tmp_path / "no_disc"
    r = lesionseg("predict", small_pairs / "images" / "IDRiD_16.jpg", "--out", plain, "--quiet", "--tta", "none",
                  "--no-disc")
    assert r.returncode == 0 and "--no-disc left its disc unplaced" in r.stdout, r.stdout + r.stderr
    unplaced = list(csv.DictReader(open(plain / "lesions.csv")))
    assert [row["area_px"] for row in unplaced] == [row["area_px"] for row in lesions]  # the same lesions
    assert all(row["od_distance_dd"] == row["zone"] == "" for row in unplaced)
    assert list(csv.DictReader(open(plain / "summary.csv")))[0]["disc_x"] == ""



def test_model_is_a_folder_or_a_bundled_name(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path,
                                             monkeypatch) -> None:
    from napari_lesionseg.core.bundled import bundled_models, default_model_dir, resolve_model
    from napari_lesionseg.core.errors import LesionsegInputError

    monkeypatch.chdir(tmp_path)  # no folder named like a bundled model here
    assert resolve_model(None) == default_model_dir() == resolve_model("default")
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    (tmp_path / "default").mkdir()  # a folder the user named "default" wins over the bundled name
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "default")
    assert resolve_model("default") == Path("default")
    (tmp_path / "default" / "config.json").unlink()  # one that holds no model: both are said ("config.json is missing")
    with pytest.raises(LesionsegInputError, match="named like the bundled model 'default' holds no model"):
        resolve_model("default")
    assert list(bundled_models())[0] == "default"
    with pytest.raises(LesionsegInputError, match=r"nor is it a bundled model \(default"):
        resolve_model("no-such-model")
    r = lesionseg("predict", small_pairs / "images" / "IDRiD_16.jpg", "--model", "no-such-model", "--out",
                  tmp_path / "o", "--quiet")
    assert r.returncode == 2 and "no-such-model: model folder does not exist, nor is it a bundled model (default" in r.stderr
    assert r.stderr.count("\n") == 1

def test_the_bundled_five_output_model_on_photos_it_never_trained_on(tmp_path: Path) -> None:
    """``--model multi``: the two sample photos were in its validation split. It finds their
    optic discs and exudates, and places every lesion relative to the disc and the macula."""
    from napari_lesionseg.core.bundled import sample_data_dir
    from napari_lesionseg.core.image_io import read_mask

    sample = sample_data_dir()
    r = lesionseg("predict", sample / "IDRiD_04.jpg", sample / "IDRiD_16.jpg", "--model", "multi",
                  "--out", tmp_path, "--quiet", "--tta", "none")
    assert r.returncode == 0, r.stderr
    assert "model 'multi'" in r.stdout

    def dice(stem: str, kind: str) -> float:
        pred = read_mask(tmp_path / f"{stem}_{kind}_mask.png") > 0
        truth = read_mask(sample / f"{stem}_{kind}.png", shape=pred.shape) > 0
        return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))

    # measured 0.895 / 0.678 (optic disc), 0.722 (IDRiD_16's exudates); floors with room
    assert dice("IDRiD_04", "OD") > 0.8 and dice("IDRiD_16", "OD") > 0.55
    assert dice("IDRiD_16", "EX") > 0.6
    rows = list(csv.DictReader(open(tmp_path / "lesions.csv")))
    assert {"HE", "MA", "EX"} <= {row["type"] for row in rows}
    assert all(row["zone"] in ("macula", "posterior pole", "periphery") and float(row["od_distance_dd"]) >= 0
               for row in rows)


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A small tmpfs mounted at ``path`` for the block (root only); skips the test where this
    system does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode(errors='replace').strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)])


def _one_clear_line(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(n in line for n in needles), line
    return line


def test_unwritable_outputs_are_one_clear_line_before_any_work(tmp_path: Path, small_pairs: Path,
                                                              tiny_model_dir: Path) -> None:
    photo = small_pairs / "images" / "IDRiD_16.jpg"
    afile = tmp_path / "a-file"
    afile.write_text("x")
    r = lesionseg("predict", photo, "--out", afile / "out", "--model", tiny_model_dir, "--quiet")
    _one_clear_line(r, str(afile / "out"), "below a file")
    r = lesionseg("predict", photo, "--out", afile, "--model", tiny_model_dir, "--quiet")
    _one_clear_line(r, str(afile), "is a file")
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        r = lesionseg("predict", photo, "--out", ro / "out", "--model", tiny_model_dir, "--quiet")
        _one_clear_line(r, str(ro / "out"), "Read-only file system")


def test_full_disk_says_which_photos_are_complete(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    imgs = tmp_path / "in"
    imgs.mkdir()
    for k in range(6):
        shutil.copy(small_pairs / "images" / "IDRiD_16.jpg", imgs / f"p{k}.jpg")
    # 65 4-KB pages: room for a few photos' three maps, not for six. How many fit depends on how
    # well a random network's maps compress, which depends on the precision it runs in (same
    # VM: two in fp32, five in bf16, which `auto` takes on a CPU with native bf16), so the test
    # reads which photo hit the full disk from the message and checks that everything before
    # it, and nothing of it, is on the disk
    with _tmpfs(tmp_path / "full", "size=260k") as full:
        r = lesionseg("predict", imgs, "--out", full, "--model", tiny_model_dir, "--quiet")
        line = _one_clear_line(r, str(full / "p"), "No space left on device")
        hit = re.search(re.escape(str(full / "p")) + r"(\d)_\w+\.png: cannot be written", line)
        assert hit, line
        k = int(hit.group(1))
        assert 1 <= k < 6, line
        done = ", ".join(f"p{j}" for j in range(k))
        assert line.endswith(f"the outputs of {k} photo(s) before it are complete ({done})"), line
        left = sorted(p.name for p in full.iterdir() if p.suffix == ".png")
        assert left == [f"p{j}_{m}.png" for j in range(k) for m in ("fuzzy", "mask", "prob")]  # nothing half-done


def test_ctrl_c_keeps_the_finished_photos_rows(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    import signal
    import time

    imgs = tmp_path / "in"
    imgs.mkdir()
    for k in range(60):
        shutil.copy(small_pairs / "images" / "IDRiD_04.jpg", imgs / f"p{k:02d}.jpg")
    out = tmp_path / "out"
    exe = shutil.which("lesionseg", path=str(Path(sys.executable).parent)) or shutil.which("lesionseg")
    # Ctrl-C as in a terminal: a shell without job control starts background commands with SIGINT
    # ignored (`cmd &` in a script), and the child would inherit that and never see the signal
    proc = subprocess.Popen([exe, "predict", str(imgs), "--out", str(out), "--model", str(tiny_model_dir), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "p01_fuzzy.png").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    rows = list(csv.DictReader(open(out / "summary.csv")))
    status = {r["image"]: r["status"] for r in rows}
    assert len(status) == 60 and status["p00.jpg"] == "ok"
    assert "not run (interrupted)" in status.values()
    done = {r["image"] for r in rows if r["status"] == "ok"}
    lesion_images = {r["image"] for r in csv.DictReader(open(out / "lesions.csv"))}
    assert lesion_images <= done


def test_photos_and_masks_in_one_folder(tmp_path: Path) -> None:
    """``--images sample_data --masks sample_data``: a photo is never taken for its own mask."""
    from napari_lesionseg.core.bundled import sample_paths
    from napari_lesionseg.core.pairs import match_pairs

    folder = sample_paths("idrid_16")[0].parent
    pairs = match_pairs(folder, folder)
    assert sorted((p.image.name, p.mask.name) for p in pairs) == [("IDRiD_04.jpg", "IDRiD_04_HE.png"),
                                                                    ("IDRiD_16.jpg", "IDRiD_16_HE.png")]


def test_predict_and_evaluate_on_extra_grids(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    """``--extra-grids``: the network also runs on those working grids and the probabilities
    are averaged (another probability map, said in the output line); a bad list is one clear
    line and writes nothing."""
    photo = small_pairs / "images" / "IDRiD_16.jpg"
    r = lesionseg("predict", photo, "--model", tiny_model_dir, "--out", tmp_path / "one", "--quiet")
    assert r.returncode == 0, r.stderr
    r = lesionseg("predict", photo, "--model", tiny_model_dir, "--out", tmp_path / "three", "--quiet",
                  "--extra-grids", "96,176")
    assert r.returncode == 0, r.stderr
    assert "also on grids of 96, 176 px, averaged" in r.stdout and "far from the grid" not in r.stderr
    r = lesionseg("predict", photo, "--model", tiny_model_dir, "--out", tmp_path / "far", "--quiet",
                  "--extra-grids", "40")  # a third of the model's 128 px: said (100 against 832 lost 24 of 25 lesions)
    assert r.returncode == 0 and "--extra-grids 40: far from the grid the model learned at (128 px" in r.stderr
    one, three = (np.asarray(Image.open(tmp_path / d / "IDRiD_16_prob.png")) for d in ("one", "three"))
    assert one.shape == three.shape and not np.array_equal(one, three)
    own = json.loads((tiny_model_dir / "config.json").read_text())["preprocess"]["fov_diameter"]
    said = {d: next(csv.DictReader(open(tmp_path / d / "summary.csv"))) for d in ("one", "three")}  # how each was made
    assert [said[d]["grids"] for d in ("one", "three")] == [f"{own}", f"{own}+96+176"]
    assert said["one"]["tta"] == said["three"]["tta"] != "" and said["one"]["precision"] in {"fp32", "bf16"}
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks", "--model",
                  tiny_model_dir, "--quiet", "--extra-grids", "96")
    assert r.returncode == 0 and "also on grids of 96 px" in r.stdout and "aupr" in r.stdout, r.stderr
    for bad, problem in (("10", "must be distinct whole numbers of px in 32..2048"), ("96,x", "not a comma-separated")):
        r = lesionseg("predict", photo, "--model", tiny_model_dir, "--out", tmp_path / "never", "--extra-grids", bad)
        assert r.returncode == 2 and problem in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "never").exists()


def test_predict_into_a_project_uses_its_active_model_and_keeps_its_corrections(tmp_path: Path, small_pairs: Path,
                                                                                tiny_model_dir: Path) -> None:
    """``predict --project`` fills a plugin project headless: a photo that fails is not
    registered, the project's promoted model is the default (as in the plugin), and predicting
    again never touches a saved correction."""
    from napari_lesionseg.core.registry import Registry
    from napari_lesionseg.core.store import Project

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(small_pairs / "images" / "IDRiD_16.jpg", photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    proj = tmp_path / "proj"
    shutil.copytree(tiny_model_dir, proj / "models" / "tiny")
    Registry(proj).promote("tiny")
    version = load_model_folder(tiny_model_dir).version

    r = lesionseg("predict", photos, "--project", proj, "--keep-going", "--quiet")
    assert r.returncode == 1 and "broken.jpg" in r.stderr, r.stderr
    project = Project(proj)
    assert project.image_ids() == ["IDRiD_16"]
    assert json.loads((proj / "predictions" / version / "IDRiD_16.json").read_text())["model_version"] == version
    assert not list(tmp_path.glob("*.csv")) and not (proj / "summary.csv").exists()  # no --out: no output files

    label = (read_mask(small_pairs / "masks" / "IDRiD_16_HE.png") > 0).astype(np.uint8)
    project.save_label("IDRiD_16", label)
    out = tmp_path / "out"
    r = lesionseg("predict", photos / "IDRiD_16.jpg", "--project", proj, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert (out / "IDRiD_16_mask.png").exists() and (out / "summary.csv").exists()
    assert [v.version for v in project.versions("IDRiD_16")] == [1]
    assert np.array_equal(project.latest_label("IDRiD_16"), label)
    # the project's own photos segmented again (after a promotion): the same ids, nothing copied twice
    r = lesionseg("predict", proj / "images", "--project", proj, "--quiet")
    assert r.returncode == 0 and "1 of 1 images" in r.stdout, r.stderr
    assert project.image_ids() == ["IDRiD_16"] and len(list((proj / "images").iterdir())) == 1


def test_predict_needs_an_output_folder_or_a_project(tmp_path: Path, small_pairs: Path) -> None:
    r = lesionseg("predict", small_pairs / "images")
    _one_clear_line(r, "--out", "--project")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    _one_clear_line(lesionseg("predict", small_pairs / "images", "--project", afile), str(afile), "folder")
    assert afile.read_text() == "x"


def test_predict_on_nothing_to_segment_makes_nothing(tmp_path: Path, small_pairs: Path) -> None:
    """A mistyped folder (or an empty one) ran: it made the output folder, with a summary of one
    failed row named after the folder and an empty lesion table, behind a progress bar."""
    out = tmp_path / "out"
    _one_clear_line(lesionseg("predict", tmp_path / "photos", "--out", out), str(tmp_path / "photos"),
                    "no such file", "nothing to segment")
    (tmp_path / "empty").mkdir()
    _one_clear_line(lesionseg("predict", tmp_path / "empty", tmp_path / "nope.jpg", "--out", out),
                    str(tmp_path / "empty"), "holds no .jpg", "nor is the other input a photo")
    assert not out.exists()
    r = lesionseg("predict", tmp_path / "empty", small_pairs / "images" / "IDRiD_04.jpg", "--out", out, "--quiet",
                  "--keep-going")  # one photo among them: the batch runs, the folder its failed row
    assert r.returncode == 1 and "1 of 2 images" in r.stdout, r.stderr  # some failed
    assert "empty,failed" in (out / "summary.csv").read_text()


def test_the_headless_loop_finetunes_the_active_model_and_promotes(tmp_path: Path, small_pairs: Path,
                                                                   tiny_model_dir: Path) -> None:
    """The plugin's loop without a window: ``finetune --project`` starts from the project's
    active model and makes a new version in the project (as the dock's button), and ``models``
    lists, promotes and discards versions (as the dock's Promote and Discard)."""
    from napari_lesionseg.core.registry import Registry
    from napari_lesionseg.core.store import Project

    proj = tmp_path / "proj"
    shutil.copytree(tiny_model_dir, proj / "models" / "tiny")
    reg = Registry(proj)
    reg.promote("tiny")
    project = Project(proj)
    for img in sorted((small_pairs / "images").iterdir()):
        iid = project.add_image(img)
        project.save_label(iid, read_mask(small_pairs / "masks" / f"{img.stem}_HE.png"))
    r = lesionseg("finetune", "--project", proj, "--steps", "2", timeout=600, process=True)
    assert r.returncode == 0, r.stderr
    new = [v for v in reg.versions() if v != "tiny"]
    assert len(new) == 1 and f"--promote {new[0]}" in r.stdout
    assert ".tmp" not in r.stdout, r.stdout  # its "done" line named the run's best checkpoint, in a folder since removed
    # the verdict the dock shows, here too: when a forgetting check no checkpoint can pass (margin -1)
    # keeps the old model, the version holds its weights and nothing suggests promoting it
    from lesionseg_training.replay import write_replay
    from napari_lesionseg.core.pairs import match_pairs

    write_replay(reg.dir / "tiny", match_pairs(small_pairs / "images", small_pairs / "masks"),
                 load_model_folder(reg.dir / "tiny").config.preprocess)
    r = lesionseg("finetune", "--project", proj, "--steps", "2", "--guard-margin", "-1", timeout=600)
    kept = [v for v in reg.versions() if v not in ("tiny", new[0])]
    assert r.returncode == 0 and len(kept) == 1, r.stderr
    assert f"new version {kept[0]} keeps the old weights, so using it changes nothing" in r.stdout
    assert "on the 2 photo(s) it trained on" in r.stdout and "--promote" not in r.stdout
    rows = {ln.split()[0]: ln for ln in lesionseg("models", "--project", proj).stdout.splitlines()}
    assert "its parent's weights" in rows[kept[0]] and "its parent's weights" not in rows[new[0]]
    reg.discard(kept[0])
    lineage = json.loads((reg.dir / new[0] / "lineage.json").read_text())
    assert lineage["parent"]["version"] == load_model_folder(tiny_model_dir).version  # the active model, not the default

    r = lesionseg("models", "--project", proj)
    assert r.returncode == 0, r.stderr
    assert "* tiny" in r.stdout and f"  {new[0]}" in r.stdout and "Dice" in r.stdout and "active: tiny" in r.stdout
    r = lesionseg("models", "--project", proj, "--promote", new[0])
    assert r.returncode == 0 and reg.active() == reg.dir / new[0] and f"* {new[0]}" in r.stdout, r.stderr
    _one_clear_line(lesionseg("models", "--project", proj, "--discard", new[0]), new[0], "active")
    _one_clear_line(lesionseg("models", "--project", proj, "--promote", "nope"), "nope", "no such model version")
    # a model folder copied in by hand without its weights: listed as what it is, not promoted as "no such version"
    shutil.copytree(tiny_model_dir, reg.dir / "copied", ignore=shutil.ignore_patterns("weights.safetensors"))
    _one_clear_line(lesionseg("models", "--project", proj, "--promote", "copied"), "copied",
                    "not a complete model folder (no weights.safetensors)")
    assert "  copied: not a model version (no weights.safetensors)" in lesionseg("models", "--project", proj).stdout
    shutil.rmtree(reg.dir / "copied")
    r = lesionseg("models", "--project", proj, "--discard", "tiny")
    assert r.returncode == 0 and (reg.dir / ".discarded" / "tiny").is_dir(), r.stderr
    r = lesionseg("models", "--project", proj, "--use-default")
    assert r.returncode == 0 and "* shipped default model" in r.stdout and "active: the shipped" in r.stdout
    _one_clear_line(lesionseg("models", "--project", tmp_path / "none"), "none", "not a plugin project folder")
    # a mistyped project of a command that reads one makes no empty project there
    _one_clear_line(lesionseg("finetune", "--project", tmp_path / "typo", "--steps", "2"), "typo", "not a plugin project")
    assert not (tmp_path / "typo").exists()


def test_a_photo_given_twice_is_segmented_once(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    """``predict a.jpg a.jpg`` (or a folder and a photo in it) segmented the photo twice and
    listed it twice in summary.csv and lesions.csv, doubling its lesions in any count."""
    photo = small_pairs / "images" / "IDRiD_16.jpg"
    r = lesionseg("predict", small_pairs / "images", photo, photo, "--model", tiny_model_dir, "--out", tmp_path / "o",
                  "--quiet")
    assert r.returncode == 0 and "2 of 2 images" in r.stdout, r.stderr
    with open(tmp_path / "o" / "summary.csv", newline="") as fh:
        assert [row["image"] for row in csv.DictReader(fh)] == ["IDRiD_04.jpg", "IDRiD_16.jpg"]


def test_a_pixel_size_that_is_no_pixel_size_is_refused(tmp_path: Path, small_pairs: Path) -> None:
    """``--mm-per-px -1`` gave positive lesion areas, 0 areas of 0, and 250 (pixels per mm given
    instead of 0.004 mm per pixel) areas 62,500 squared, some 4 billion times, too large: each is
    refused before any work, saying why; so is an evaluation threshold that is no probability."""
    for value, needle in (("-1", "more than 0"), ("0", "more than 0"), ("250", "looks like pixels per mm: give 0.00400")):
        r = lesionseg("predict", small_pairs / "images" / "IDRiD_16.jpg", "--out", tmp_path / "o", "--mm-per-px", value)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    # evaluate's threshold is a probability: 5 scored every photo Dice 0, 50 was likely 0.5
    r = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks", "--threshold", "50")
    assert r.returncode == 2 and "must be a probability between 0 and 1; 50 % is 0.5" in r.stderr, r.stderr


def test_a_finetune_option_out_of_range_is_one_clear_line_and_nothing_is_made(tmp_path: Path,
                                                                               small_pairs: Path) -> None:
    """A budget the fine-tune cannot run (a blend share of 2 once raised a traceback; no minutes
    at all, or a replay share above 1, once trained anyway) is refused naming the option, before
    a photo is read or a folder made."""
    base = ("finetune", "--images", small_pairs / "images", "--masks", small_pairs / "masks", "--out", tmp_path / "v")
    for option, value in (("--blend", "2"), ("--minutes", "0"), ("--replay-share", "1.5"), ("--lr", "0")):
        line = _one_clear_line(lesionseg(*base, option, value), option, "must be")
        assert value in line
    assert not (tmp_path / "v").exists()


def test_evaluate_scores_a_projects_models_against_its_saved_corrections(tmp_path: Path, small_pairs: Path,
                                                                          tiny_model_dir: Path) -> None:
    """How good is the model on our own corrected photos? ``evaluate --project`` scores the
    project's active model (or any ``--model``) against its latest saved corrections."""
    from napari_lesionseg.core.registry import Registry
    from napari_lesionseg.core.store import Project

    proj = tmp_path / "proj"
    _one_clear_line(lesionseg("evaluate", "--project", proj), str(proj), "not a plugin project folder")
    project = Project(proj)
    _one_clear_line(lesionseg("evaluate", "--project", proj), "no saved corrections")
    shutil.copytree(tiny_model_dir, proj / "models" / "tiny")
    Registry(proj).promote("tiny")
    for img in sorted((small_pairs / "images").iterdir()):
        project.save_label(project.add_image(img), read_mask(small_pairs / "masks" / f"{img.stem}_HE.png"))
    out = tmp_path / "report.json"
    r = lesionseg("evaluate", "--project", proj, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "model 'tiny-test'" in r.stdout and "on 2 images" in r.stdout  # the active model, not the default
    report = json.loads(out.read_text())
    assert report["project"] == str(proj)
    # the same photos and masks as folders score the same
    r2 = lesionseg("evaluate", "--images", small_pairs / "images", "--masks", small_pairs / "masks", "--model",
                   tiny_model_dir, "--quiet")
    aupr = [re.search(r"aupr\s+([\d.]+)", x.stdout).group(1) for x in (r, r2)]
    assert aupr[0] == aupr[1]
    _one_clear_line(lesionseg("evaluate", "--project", proj, "--images", small_pairs / "images"), "not both")
    # a correction saved without reviewing hemorrhages has no hemorrhage score to give (it counted as
    # a photo with none found and none missed: Dice 1)
    only_ma = np.zeros_like(read_mask(small_pairs / "masks" / "IDRiD_04_HE.png"))
    only_ma[50:60, 50:60] = 2
    project.save_label("IDRiD_04", only_ma, types=["MA"])
    r = lesionseg("evaluate", "--project", proj, "--quiet")
    assert r.returncode == 0 and "on 1 images" in r.stdout, r.stdout + r.stderr


def test_a_clinics_patient_folders_are_evaluated_against_their_masks(tmp_path: Path, small_pairs: Path,
                                                                   tiny_model_dir: Path) -> None:
    """Photos in patient folders (clinic/p1/IDRiD_04.jpg), masks in one folder: evaluate said "masks
    without an image: IDRiD_04_HE, IDRiD_16_HE", as if the photos were not there. A folder of
    photos with none in itself is searched below, the masks too when they are kept in patient
    folders as well; two photos of one name are refused, naming both."""
    clinic, masks = tmp_path / "clinic", tmp_path / "mask_tree"
    for patient, name in (("p1", "IDRiD_04"), ("p2/visit 2", "IDRiD_16")):
        for root, src, suffix in ((clinic, small_pairs / "images", ".jpg"), (masks, small_pairs / "masks", "_HE.png")):
            (root / patient).mkdir(parents=True)
            shutil.copy(src / f"{name}{suffix}", root / patient / f"{name}{suffix}")
    for mask_folder in (small_pairs / "masks", masks):
        r = lesionseg("evaluate", "--images", clinic, "--masks", mask_folder, "--model", tiny_model_dir,
                      "--out", tmp_path / mask_folder.name, "--quiet")
        assert r.returncode == 0, r.stderr
        assert "on 2 images" in r.stdout
        rows = json.loads((tmp_path / mask_folder.name / "metrics.json").read_text())["per_image"]
        assert sorted(row["image"] for row in rows) == ["IDRiD_04", "IDRiD_16"]
    shutil.copy(clinic / "p1" / "IDRiD_04.jpg", clinic / "p2" / "IDRiD_04.jpg")
    r = lesionseg("evaluate", "--images", clinic, "--masks", small_pairs / "masks", "--model", tiny_model_dir,
                  "--out", tmp_path / "twice", "--quiet")
    _one_clear_line(r, "clinic", "two photos named IDRiD_04", "p1/IDRiD_04.jpg and p2/IDRiD_04.jpg")


def test_a_clinics_patient_folders_are_segmented_with_recursive(tmp_path: Path, small_pairs: Path,
                                                                tiny_model_dir: Path) -> None:
    """Photos exported as <patient>/OD.jpg could not be segmented: the folder was "not an image
    file", and the photos given one by one "would collide" (also with only --project, where
    nothing collides). With --recursive the outputs mirror the subfolders."""
    clinic = tmp_path / "clinic"
    for rel in ("p1/OD.jpg", "p2/OD.jpg", "p2/visit 2/OD.jpg", ".cache/OD.jpg"):
        (clinic / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_pairs / "images" / ("IDRiD_16.jpg" if rel == "p2/OD.jpg" else "IDRiD_04.jpg"), clinic / rel)
    out = clinic / "out"  # inside the folder given: never taken for photos on the next run
    r = lesionseg("predict", clinic, "--out", out, "--model", tiny_model_dir, "--quiet")
    _one_clear_line(r, "clinic", "--recursive")
    r = lesionseg("predict", clinic / "p1" / "OD.jpg", clinic / "p2" / "OD.jpg", "--out", out, "--model",
                  tiny_model_dir, "--quiet")
    _one_clear_line(r, "OD.jpg", "outputs would collide")
    assert not out.exists()
    for _ in range(2):  # the second run finds the same three photos, not the first run's outputs
        r = lesionseg("predict", clinic, "-r", "--out", out, "--model", tiny_model_dir, "--quiet")
        assert r.returncode == 0, r.stderr
        assert "3 of 3 images" in r.stdout
    for rel in ("p1/OD", "p2/OD", "p2/visit 2/OD"):
        assert read_mask(out / f"{rel}_mask.png").shape[0] == 356
    with open(out / "summary.csv", newline="") as fh:
        assert [row["image"] for row in csv.DictReader(fh)] == ["p1/OD.jpg", "p2/OD.jpg", "p2/visit 2/OD.jpg"]
    r = lesionseg("predict", clinic / "p1" / "OD.jpg", clinic / "p2" / "OD.jpg", "--project", tmp_path / "proj",
                  "--model", tiny_model_dir, "--quiet")  # no output files: nothing collides
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in (tmp_path / "proj" / "images").iterdir()) == ["OD-2.jpg", "OD.jpg"]
    # into a project, the patient folders name the photos (the review queue once listed OD, OD-2, OD-3);
    # the earlier run's outputs in clinic/out are no photos (they were taken for photos: "the image is blank")
    r = lesionseg("predict", clinic, "-r", "--project", tmp_path / "clinic_proj", "--model", tiny_model_dir, "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in (tmp_path / "clinic_proj" / "images").iterdir()) == [
        "p1_OD.jpg", "p2_OD.jpg", "p2_visit_2_OD.jpg"]
