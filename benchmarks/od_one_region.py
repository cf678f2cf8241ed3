"""The optic-disc mask kept to one region (the disc the distances are measured from), scored out
of fold: the five-output recipe's fold models re-scored on their own fold's photos with the
shipped code, their optic-disc Dice beside the kept scores of the same models from before the
change (``results/oof_states/<variant>-f<fold>-s<steps>.json``: every region above the threshold).

    python benchmarks/od_one_region.py --runs /work/cv/runs [--variant multi_he_crops] [--steps 4000]

Reads ``../shared/data`` (the folds' photos) and the run folders' ``oof/`` models; writes
``results/od_one_region_<variant>_s<steps>.json`` (every photo before and after) and prints
the pooled figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import oof_report as rep  # noqa: E402


def pooled(states: list[dict]) -> dict:
    """The folds' optic-disc scores pooled (``metrics.pool_scores``)."""
    from napari_lesionseg.core.metrics import DatasetScores, pool_scores

    ds = pool_scores([DatasetScores.from_state(s) for s in states])
    summary = ds.summary()
    return {"dice_ds": summary["dice_ds"], "dice_img": summary["dice_img"],
            "dice_min": min(float(r["dice"]) for r in ds.per_image)}


def main() -> None:
    from napari_lesionseg.core.batch import evaluate_pairs
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="the folder holding <variant>-f<fold>-s<steps>/oof")
    ap.add_argument("--variant", default="multi_he_crops")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--images", default=str(rep.cp.DATA))
    args = ap.parse_args()
    photos, states = {}, {"before": [], "after": []}
    for fold in range(5):
        name = f"{args.variant}-f{fold}-s{args.steps}"
        model = load_model_folder(Path(args.runs) / name / "oof")
        _, res = run_to_end(evaluate_pairs(model, rep.fold_pairs(args.variant, fold, args.images)[1], types=["OD"]))
        states["after"].append(res.score_state()["scores"]["OD"])
        states["before"].append(json.loads((HERE / "results" / "oof_states" / f"{name}.json").read_text())["scores"]["OD"])
        for b, a in zip(states["before"][-1]["per_image"], states["after"][-1]["per_image"], strict=True):
            photos[b["image"]] = {"fold": fold, "before": b, "after": a}
            print(f"fold {fold} {b['image']}: optic-disc Dice {b['dice']:.3f} -> {a['dice']:.3f}", flush=True)
    summary = {k: pooled(v) for k, v in states.items()}
    for k, v in summary.items():
        print(f"{k:6s} dataset Dice {v['dice_ds']:.3f}, per image {v['dice_img']:.3f}, lowest {v['dice_min']:.3f}")
    out = HERE / "results" / f"od_one_region_{args.variant}_s{args.steps}.json"
    out.write_text(json_text({"summary": summary, "photos": photos}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
