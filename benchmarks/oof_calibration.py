"""Where should a model with no held-out photos fit its calibration, threshold and review rates:
on some of its own training photos, or on the other fold models' out-of-fold predictions
(``training/oof_calibrate.py``)?

Each fold model of ``compare_presets.py --full-res`` stands in for a final model: it is scored on
its own fold's photos (which it never saw) at full resolution through the shipped path, twice:
(a) ``in_sample``: calibrated on 12 of its training photos (its ``oof/`` folder, the rule a
``--final`` model follows); (b) ``out_of_fold``: calibrated on its training photos as the other
fold models predict them (each photo by the fold model that held it out). Caveat: those other
fold models trained on this fold's photos, so (b)'s fit saw them through their weights (not
through any score); a nested cross-validation would remove that.

    python benchmarks/oof_calibration.py --runs /tmp/cv/runs --variant default --steps 1000 \\
        [--folds 0,1,2,3,4] [--cache /tmp/cache] [--out results/oof_calibration.json]

Prints a table (hemorrhage Dice, dataset and per image, lesion recall and precision, threshold)
and writes JSON. Reads ``../shared/data``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_presets as cp  # noqa: E402
from oof_report import fold_pairs  # noqa: E402


def score(folder: Path, pairs: list) -> dict:
    from napari_lesionseg.core.batch import evaluate_pairs
    from napari_lesionseg.core.metrics import LesionCounts
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    model = load_model_folder(folder)
    _, res = run_to_end(evaluate_pairs(model, pairs))
    s = res.summary
    state = res.score_state()
    lesions = LesionCounts(**state["lesions"]).summary()
    return {"aupr": s["aupr"], "dice_ds": s["dice_ds"], "dice_img": s["dice_img"],
            "lesion_recall": lesions["lesion_recall"], "lesion_precision": lesions["lesion_precision"],
            "threshold": model.config.inference.threshold,
            "per_image": state["scores"]["HE"]["per_image"]}


def main() -> None:
    from lesionseg_training.oof_calibrate import calibrate_out_of_fold, fold_groups
    from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="compare_presets' --out folder")
    ap.add_argument("--variant", default="default")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--folds", default=",".join(map(str, range(cp.N_FOLDS))))
    ap.add_argument("--images", default=str(cp.DATA))
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "oof_calibration.json"))
    args = ap.parse_args()

    runs = {k: Path(args.runs) / f"{args.variant}-f{k}-s{args.steps}" for k in range(cp.N_FOLDS)}
    missing = [str(r) for r in runs.values() if not (r / "last" / "weights.safetensors").is_file()]
    if missing:
        raise SystemExit(f"every fold's run is needed (the other folds calibrate each): missing {missing}")
    rows = []
    for k in map(int, args.folds.split(",")):
        train_pairs, val_pairs = fold_pairs(args.variant, k, args.images)
        final = load_model_folder(runs[k] / "last")
        others = [runs[j] / "last" for j in range(cp.N_FOLDS) if j != k]
        groups = fold_groups(final, others, train_pairs)
        print(f"fold {k}: calibrating on {sum(len(g.pairs) for g in groups)} photos out of fold ...", flush=True)
        config, _, _ = calibrate_out_of_fold(final, groups, args.cache)
        oofcal = runs[k] / "oofcal"
        save_model_folder(oofcal, final.net, config, {"calibrated_on": "out_of_fold"}, final.lineage, overwrite=True)
        if not (runs[k] / "oof" / "weights.safetensors").is_file():
            raise SystemExit(f"{runs[k] / 'oof'}: no in-sample calibrated model (run compare_presets --full-res)")
        for how, folder in (("in_sample", runs[k] / "oof"), ("out_of_fold", oofcal)):
            print(f"fold {k}: scoring {how} on {len(val_pairs)} photos ...", flush=True)
            rows.append({"fold": k, "calibration": how, **score(folder, val_pairs)})
    print(f"\n{args.variant}, {args.steps}-step fold models, each on its own fold's photos (full resolution):")
    print(f"{'fold':>4s} {'calibration':12s} {'threshold':>9s} {'Dice ds':>8s} {'Dice img':>8s} {'recall':>7s} "
          f"{'precision':>9s}")
    for r in rows:
        print(f"{r['fold']:4d} {r['calibration']:12s} {r['threshold']:9.3f} {r['dice_ds']:8.3f} {r['dice_img']:8.3f} "
              f"{r['lesion_recall']:7.2f} {r['lesion_precision']:9.2f}")
    summary = {}
    for how in ("in_sample", "out_of_fold"):
        rs = [r for r in rows if r["calibration"] == how]
        summary[how] = {key: statistics.mean(r[key] for r in rs) for key in
                        ("dice_ds", "dice_img", "lesion_recall", "lesion_precision", "threshold")}
        print(f"mean {how:12s} " + ", ".join(f"{key} {v:.3f}" for key, v in summary[how].items()))
    pairs_img = [(a, b) for a in rows if a["calibration"] == "in_sample" for b in rows
                 if b["calibration"] == "out_of_fold" and b["fold"] == a["fold"]]
    better = 0
    for a, b in pairs_img:
        dice_b = {x["image"]: x["dice"] for x in b["per_image"]}
        better += sum(dice_b[x["image"]] > x["dice"] for x in a["per_image"])
    n = sum(len(a["per_image"]) for a, _ in pairs_img)
    print(f"out_of_fold better per-image Dice on {better} of {n} photos")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json_text({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor(),
                                          "variant": args.variant, "steps": args.steps, "rows": rows,
                                          "summary": summary, "out_of_fold_better_photos": [better, n]}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
