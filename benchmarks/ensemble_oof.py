"""Benchmark: would two fold models, averaged, segment a fold's photos better than either alone?

Each run's ``oof/`` model (``compare_presets.py --full-res``: its last model, calibrated on
training photos only) predicts every photo of the fold at full resolution through the shipped
inference path with its own TTA; the 8-bit probabilities (as the PNG a user gets) are pooled into
one precision-recall curve per model and one for their pixel-wise mean. AUPR only: a mean's
threshold would have to be fitted on training photos, which this probe does not do. Refuses a
model whose folder does not list the fold's photos as never trained on.

    python benchmarks/ensemble_oof.py --fold 0 --runs RUN_A RUN_B [--out JSON]

Reads ``../shared/data`` (the fold's photos); prints a table and writes JSON
(``results/ensemble_oof_f<fold>.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import compare_presets as cp
import numpy as np
from numpy.typing import NDArray

HERE = Path(__file__).resolve().parent


def pooled_auprs(models: list[list[NDArray]], gts: list[NDArray], valids: list[NDArray]) -> dict[str, float]:
    """``models[m][i]``: model m's probability on photo i. Pooled AUPR of each model and of their mean."""
    from napari_lesionseg.core.metrics import PooledPR

    curves = {f"model_{m}": PooledPR() for m in range(len(models))} | {"mean": PooledPR()}
    for i, (gt, valid) in enumerate(zip(gts, valids)):
        for m, probs in enumerate(models):
            curves[f"model_{m}"].add(probs[i], gt, valid)
        curves["mean"].add(np.mean([probs[i] for probs in models], axis=0), gt, valid)
    return {k: c.aupr() for k, c in curves.items()}


def main() -> None:
    import torch

    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.model_folder import load_model_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="compare_presets run folders (each with oof/)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    pairs = cp._fold_pairs(cp.DATA, args.fold)
    models = [load_model_folder(Path(r) / "oof") for r in args.runs]
    for run, model in zip(args.runs, models):
        unseen = set(model.unseen_photos or [])
        if not {p.id for p in pairs} <= unseen:
            raise SystemExit(f"{run}/oof: not a model of fold {args.fold} (its unseen photos do not include the fold's)")
    probs: list[list[NDArray]] = [[] for _ in models]
    gts, valids = [], []
    for pair in pairs:
        rgb, _ = read_image(pair.image)
        gt = pair.read_mask(shape=rgb.shape[:2])
        gts.append(gt == 1)
        valids.append(gt != 255)
        for m, model in enumerate(models):
            p = run_to_end(predict(model, rgb)).probability
            probs[m].append(np.round(p * 255).astype(np.uint8).astype(np.float32) / 255)  # as the PNG holds it
    auprs = pooled_auprs(probs, gts, valids)
    print(f"fold {args.fold}, {len(pairs)} photos, pooled hemorrhage AUPR at full resolution")
    for m, run in enumerate(args.runs):
        print(f"  {Path(run).name:28s} {auprs[f'model_{m}']:.4f}")
    print(f"  {'mean of the two' if len(models) == 2 else 'mean':28s} {auprs['mean']:.4f}")
    out = args.out or HERE / "results" / f"ensemble_oof_f{args.fold}.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "fold": args.fold,
                               "photos": [p.id for p in pairs], "runs": [Path(r).name for r in args.runs],
                               "aupr": {Path(r).name: auprs[f"model_{m}"] for m, r in enumerate(args.runs)},
                               "aupr_mean": auprs["mean"]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
