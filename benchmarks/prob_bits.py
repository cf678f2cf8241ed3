"""Benchmark: how much pooled AUPR a probability map loses when written as an 8-bit PNG
(``round(255 p)``, ``lesionseg predict``'s default) instead of a 16-bit one (``--prob-bits 16``).

Each fold's ``oof/`` model (``compare_presets.py --full-res``: its last model, calibrated on its
training photos only) predicts its fold's photos at full resolution through the shipped inference
path; the probability is quantised as each PNG depth holds it and pooled over the folds into one
precision-recall curve per depth (as ``lesionseg evaluate --prob-bits`` scores it). Nothing is
fitted on the scored photos.

    python benchmarks/prob_bits.py --runs /work/cv/runs_seed1 --variants default,default_lcf08 \\
        --steps 1000 --folds 0,1 [--tta flips] [--types HE,MA,EX,SE] [--out JSON]

Reads ``../shared/data`` (the folds' photos); prints a table and writes JSON
(``results/prob_bits.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import compare_presets as cp

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DEPTHS = (8, 16)


def main() -> None:
    import torch

    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.lesion_types import HE
    from napari_lesionseg.core.metrics import DatasetScores, pool_scores
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.outputs import as_written

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="where <variant>-f<fold>-s<steps> runs are")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--tta", choices=["none", "hflip", "flips"], default="flips",
                    help="as every kept fold score (default: flips)")
    ap.add_argument("--types", default="HE", help="outputs to score, e.g. HE,MA,EX,SE (default: HE)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "prob_bits.json")
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    folds = [int(f) for f in args.folds.split(",")]
    started = time.time()
    types = args.types.split(",")
    rows: dict[str, dict] = {}
    for variant in args.variants.split(","):
        parts: dict[tuple[str, int], list] = {(t, b): [] for t in types for b in DEPTHS}
        for fold in folds:
            run = args.runs / f"{variant}-f{fold}-s{args.steps}"
            model = load_model_folder(run / "oof")
            pairs = cp._fold_pairs(cp.DATA, fold)
            if not {p.id for p in pairs} <= set(model.unseen_photos or []):
                raise SystemExit(f"{run}/oof: not a model of fold {fold} (its unseen photos do not include the fold's)")
            missing = set(types) - set(model.config.network.outputs)
            if missing:
                raise SystemExit(f"{run}/oof: the model has no {', '.join(sorted(missing))} output")
            scores = {(t, b): DatasetScores(threshold=model.config.inference.for_type(t)[0], pr_bins=2**b)
                      for t in types for b in DEPTHS}
            for pair in pairs:
                rgb, _ = read_image(pair.image)
                pred = run_to_end(predict(model, rgb, tta=args.tta, types=[t for t in types if t != HE]))
                for t, gt in pair.read_types(types, rgb.shape[:2]).items():
                    if gt is None:  # the type is unknown for this photo
                        continue
                    prob = pred.probability if t == HE else pred.others[t].probability
                    for b in DEPTHS:
                        scores[t, b].add(pair.id, as_written(prob, b), gt == 1, gt != 255, with_hd95=False,
                                         mask=pred.mask if t == HE else None)
            for key, sc in scores.items():
                parts[key].append(sc)
        rows[variant] = {t: {str(b): {"aupr": pool_scores(parts[t, b]).summary()["aupr"],
                                      "aupr_per_fold": [s.summary()["aupr"] for s in parts[t, b]]} for b in DEPTHS}
                         for t in types}
        print(f"{variant} done ({time.time() - started:.0f} s)", flush=True)
    print(f"\nfolds {args.folds}, {args.steps}-step fold models, TTA {args.tta}, at full resolution")
    print("| variant | output | pooled AUPR, 8-bit | 16-bit | difference | per fold, 8-bit -> 16-bit |")
    print("|---|---|---|---|---|---|")
    for v, by_type in rows.items():
        for t, r in by_type.items():
            a8, a16 = r["8"]["aupr"], r["16"]["aupr"]
            per = ", ".join(f"{x:.3f} -> {y:.3f}" for x, y in zip(r["8"]["aupr_per_fold"], r["16"]["aupr_per_fold"]))
            print(f"| {v} | {t} | {a8:.3f} | {a16:.3f} | {a16 - a8:+.3f} | {per} |")
    args.out.write_text(json_text({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": os.uname().machine,
                                    "runs": str(args.runs), "steps": args.steps, "folds": folds, "tta": args.tta,
                                    "types": types,
                                    "variants": rows, "wall_s": round(time.time() - started)}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
