"""How faithfully stored fold predictions (``lesionseg_training.oof_predictions``) stand for the
predictions themselves: a model's predictions of some annotated photos, the calibration and the
review fit computed directly and read back from a file, side by side.

What is measured is the storage, not the model: any model and photos do (by default the shipped
model and every third IDRiD training photo, in-sample for it). Prints a table, writes JSON::

    python benchmarks/stored_predictions_fidelity.py [--model DIR] [--images ROOT] [--photos 16] \\
        [--out benchmarks/results/stored_predictions_fidelity.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
MODEL = HERE.parent / "napari_lesionseg" / "models" / "default"
CALIBRATION = ("platt_a", "platt_b", "threshold", "val_best_dice_calibrated", "val_aupr_raw_65536bins")
REVIEW = ("fit_pixel_error_share", "fit_candidates", "fit_lesions", "fit_candidate_hit_share", "fit_false_alarm_share")


def main() -> None:
    import torch

    from lesionseg_training.calibrate import calibrate_pooled
    from lesionseg_training.data import find_pairs, prepare_pair
    from lesionseg_training.fit_review import fit_review_pooled
    from lesionseg_training.oof_predictions import load, predict, save
    from lesionseg_training.train_config import DataConfig
    from napari_lesionseg.core.model_folder import load_model_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--images", default=str(DATA))
    ap.add_argument("--photos", type=int, default=16, help="every third photo, this many")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "stored_predictions_fidelity.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model_folder(args.model)
    pairs = find_pairs(DataConfig(images=args.images))[::3][: args.photos]
    items = [prepare_pair(p, model.config.preprocess, args.cache, model.config.network.outputs) for p in pairs]
    direct = list(predict(model.net, model.config, items))
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "stored.npz"
        save(f, direct, {"note": "fidelity check"})
        size = f.stat().st_size
        stored = list(load(f))
    fits = {}
    for name, photos in (("direct", direct), ("stored", stored)):
        config, figures = calibrate_pooled(model.config, photos)
        config, review = fit_review_pooled(config, photos)
        fits[name] = (figures, review, config.inference)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "model": str(args.model), "photos": [p.id for p in pairs],
                    "file_mb": size / 1e6, "mb_per_photo": size / 1e6 / len(pairs), "figures": {}}
    for k in CALIBRATION:
        report["figures"][k] = [fits["direct"][0][k], fits["stored"][0][k]]
    for k in REVIEW:
        report["figures"][k] = [fits["direct"][1].get(k), fits["stored"][1].get(k)]
    a, b = fits["direct"][2], fits["stored"][2]
    q = np.linspace(0, 1, 401)
    curves = {}
    for name, x, y in (("error_rate", a.fuzzy.error_rate, b.fuzzy.error_rate),
                       ("missed_rate", a.review.missed_rate, b.review.missed_rate),
                       ("false_alarm_rate", a.review.false_alarm_rate, b.review.false_alarm_rate)):
        d = np.abs(np.interp(q, *x) - np.interp(q, *y))
        curves[name] = {"max_abs_difference": float(d.max()), "at": float(q[d.argmax()]), "mean_abs_difference": float(d.mean())}
    report["curves"] = curves
    print(f"{len(pairs)} photos, {report['file_mb']:.2f} MB stored ({report['mb_per_photo']:.3f} MB a photo)")
    print("figure | direct | read back")
    for k, (x, y) in report["figures"].items():
        print(f"{k} | {x:.4f} | {y:.4f}")
    print("curve | max abs difference (at q) | mean abs difference")
    for k, c in curves.items():
        print(f"{k} | {c['max_abs_difference']:.4f} ({c['at']:.3f}) | {c['mean_abs_difference']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
