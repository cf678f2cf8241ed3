"""Benchmark: the shipped fuzzy map and review queue on cross-validation folds, beside entropy of
the same probability and an entropy-ranked queue (issue 12: "measured on folds", not on one split).

For each fold run of ``compare_presets.py --full-res`` (its ``oof/`` model: calibrated on its
own training photos, map = entropy, no review rates):

1. ``fit_review`` (what ``python -m lesionseg_training.fit_review`` and the trainer run): the
   error-rate map's knots and the review queue's rates fitted on the fold model's *training*
   photos (the fold's photos fit nothing);
2. ``evaluate_pairs`` (what ``lesionseg evaluate`` runs) on the fold's photos, which neither the
   model nor the fit saw, at full resolution through the shipped inference path: the share of
   the mask's wrong pixels in the top 1 / 5 / 10 % of each photo's disc for the map and for
   entropy, and of the first 20 regions per photo of each queue, the missed lesions (annotated
   lesions the mask does not touch) they reach and the false alarms (mask components touching
   no annotation) they show.

Prints a table (per fold, and the lesion counts summed over the folds) and writes JSON::

    python benchmarks/fuzzy_queue_folds.py --runs '/tmp/cv/runs/default-f{fold}-s1000/oof' --folds 0,1 \\
        --cache /tmp/cache --out benchmarks/results/fuzzy_queue_folds01.json

Several ``--runs`` patterns (one per recipe) may be given. Reads ``../shared/data`` (the photos).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
KS = (1, 5, 10)


def one_fold(model_dir: Path, images: Path, cache: Path | None) -> dict:
    from lesionseg_training.data import find_pairs, prepare_pair
    from lesionseg_training.fit_review import fit_review
    from lesionseg_training.train_config import DataConfig
    from napari_lesionseg.core.batch import evaluate_pairs
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    model = load_model_folder(model_dir)
    photos = set(model.unseen_photos)
    if not photos:
        raise SystemExit(f"{model_dir}: names no photos it never trained on (not a fold model)")
    pairs = find_pairs(DataConfig(images=str(images)))
    fold = [p for p in pairs if p.id in photos]
    if len(fold) != len(photos):
        raise SystemExit(f"{images}: lacks {sorted(photos - {p.id for p in fold})} (photo or hemorrhage mask)")
    train = (prepare_pair(p, model.config.preprocess, cache) for p in pairs if p.id not in photos)
    config, _ = fit_review(model.net, model.config, train)
    _, res = run_to_end(evaluate_pairs(replace(model, config=config), fold))
    m = res.summary
    missed, alarms = int(m["fuzzy_queue_missed_lesions"]), int(m["fuzzy_queue_false_alarms"])
    row = {"model": str(model_dir), "photos": sorted(photos), "aupr": m["aupr"], "dice_ds": m["dice_ds"],
           "missed_lesions": missed, "false_alarms": alarms}
    for name in ("fuzzy", "entropy"):
        for k in KS:
            row[f"{name}_top{k}"] = m[f"{name}_top{k}pct_error_capture"]
        row[f"{name}_queue_missed_reached"] = round(m[f"{name}_queue_missed_reached"] * missed)
        row[f"{name}_queue_false_alarms_shown"] = round(m[f"{name}_queue_false_alarms_shown"] * alarms)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | AUPR | wrong pixels in the top 1/5/10 %: map | entropy | missed lesions reached: queue "
             "| entropy queue | false alarms shown: queue | entropy queue |", "|---" * 8 + "|"]
    for r in rows:
        cap = {n: " / ".join(f"{r[f'{n}_top{k}']:.3f}" for k in KS) for n in ("fuzzy", "entropy")}
        lines.append(f"| {r['model']} | {r['aupr']:.3f} | {cap['fuzzy']} | {cap['entropy']} | "
                     f"{r['fuzzy_queue_missed_reached']} of {r['missed_lesions']} | "
                     f"{r['entropy_queue_missed_reached']} | {r['fuzzy_queue_false_alarms_shown']} of "
                     f"{r['false_alarms']} | {r['entropy_queue_false_alarms_shown']} |")
    s = {k: sum(r[k] for r in rows) for k in ("missed_lesions", "false_alarms", "fuzzy_queue_missed_reached",
                                              "entropy_queue_missed_reached", "fuzzy_queue_false_alarms_shown",
                                              "entropy_queue_false_alarms_shown")}
    lines.append(f"| all | | | | {s['fuzzy_queue_missed_reached']} of {s['missed_lesions']} | "
                 f"{s['entropy_queue_missed_reached']} | {s['fuzzy_queue_false_alarms_shown']} of "
                 f"{s['false_alarms']} | {s['entropy_queue_false_alarms_shown']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True,
                    help="fold model folder patterns with {fold}, e.g. '/tmp/cv/runs/default-f{fold}-s1000/oof'")
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--images", type=Path, default=DATA, help="IDRiD-layout root (images/, masks_HE/)")
    ap.add_argument("--cache", type=Path, default=None, help="prepared-data cache folder")
    ap.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = [one_fold(Path(pattern.format(fold=int(f))), args.images, args.cache)
            for pattern in args.runs for f in args.folds.split(",")]
    print(table(rows))
    if args.out:
        args.out.write_text(json_text({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
                                        platform.machine(), "minutes": round((time.time() - t0) / 60, 1),
                                        "how": __doc__.split("\n\n")[1:3], "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
