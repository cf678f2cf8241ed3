"""Benchmark (issue 12): does the disagreement between an ensemble's members rank its mask's
mistakes better than the entropy of its probability?

For each fold, the fold ensemble (``oof/`` of an ``ensemble_oof``-style run: two fold models
composed by ``python -m lesionseg_training.ensemble`` and calibrated on the fold's training
photos) predicts its fold's photos at full resolution through the shipped inference path, and
each member alone predicts them once (no flips). Ranked over each photo's field of view (pixels
marked unsure left out), the share of the ensemble mask's wrong pixels in the top 1 / 5 / 10 %
(``review_metrics.top_capture``, ties shared out evenly) for: entropy of the ensemble's
probability, the members' disagreement ``|p1 - p2|``, their sum, ``max(entropy, 2 |p1 - p2|)``
and the shipped fuzzy map (the fitted error rate). Pooled over the folds' photos and per fold.

    python benchmarks/member_disagreement.py --ensembles '/work/cv/s28/ens_runs/ensemble_cameras_multi-f{fold}-s4000/oof' \\
        --members '/work/cv/runs/default_cameras-f{fold}-s4000/oof' '/work/cv/runs/multi_he_crops-f{fold}-s4000/oof' \\
        [--folds 0,1,2,3,4] [--out results/member_disagreement.json]

Reads ``../shared/data`` (the folds' photos); prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import compare_presets as cp
import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
MAPS = ("entropy", "disagreement", "entropy + disagreement", "max(entropy, 2 disagreement)", "shipped fuzzy map")


def main() -> None:
    from napari_lesionseg.core.fuzzy import binary_entropy
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.review_metrics import top_capture

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ensembles", required=True, help="fold ensemble folder pattern with {fold}")
    ap.add_argument("--members", nargs=2, required=True, help="its two members' folder patterns with {fold}")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "member_disagreement.json")
    args = ap.parse_args()
    captured = {m: np.zeros(3) for m in MAPS}
    wrong_total, per_fold, started = 0, {}, time.time()
    for fold in map(int, args.folds.split(",")):
        ens = load_model_folder(args.ensembles.format(fold=fold))
        a, b = (load_model_folder(p.format(fold=fold)) for p in args.members)
        pairs = cp._fold_pairs(cp.DATA, fold)
        if not {p.id for p in pairs} <= set(ens.unseen_photos):
            raise SystemExit(f"{ens.path}: not a model of fold {fold} (its unseen photos do not include the fold's)")
        fold_cap, fold_wrong = {m: np.zeros(3) for m in MAPS}, 0
        for pair in pairs:
            rgb, _ = read_image(pair.image)
            gt = pair.read_mask(shape=rgb.shape[:2])
            pred = run_to_end(predict(ens, rgb, types=[]))
            p1, p2 = (run_to_end(predict(m, rgb, tta="none", types=[])).probability for m in (a, b))
            region = pred.geometry.input_fov_mask() & (gt != 255)
            wrong = (pred.mask.astype(bool) != (gt == 1)) & region
            ent, dis = binary_entropy(pred.probability), np.abs(p1 - p2)
            scores = dict(zip(MAPS, (ent, dis, ent + dis, np.maximum(ent, 2 * dis), pred.fuzzy)))
            for m, s in scores.items():
                c = top_capture(s, wrong, region)
                fold_cap[m] += c
                captured[m] += c
            fold_wrong += int(wrong.sum())
            print(f"fold {fold} {pair.id} ({time.time() - started:.0f} s)", flush=True)
        wrong_total += fold_wrong
        per_fold[fold] = {m: (fold_cap[m] / fold_wrong).tolist() for m in MAPS}
    pooled = {m: (captured[m] / wrong_total).tolist() for m in MAPS}
    print("\n| map | wrong pixels in the top 1 / 5 / 10 % (pooled) | top 1 % per fold |\n|---|---|---|")
    for m in MAPS:
        print(f"| {m} | {' / '.join(f'{v:.3f}' for v in pooled[m])} | "
              f"{' / '.join(f'{per_fold[f][m][0]:.3f}' for f in per_fold)} |")
    args.out.write_text(json_text({"date": time.strftime("%Y-%m-%d %H:%M"), "ensembles": args.ensembles,
                                    "members": args.members, "folds": list(per_fold), "pooled": pooled,
                                    "per_fold": per_fold, "wrong_pixels": wrong_total}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
