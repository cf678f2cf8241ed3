"""Benchmark: where a fold model's hemorrhage false alarms lie (issue 13 item 3). Each run's
``oof/`` model (a ``compare_presets.py --full-res`` run, calibrated on its training photos)
predicts its own fold's photos at full resolution through the shipped path; every pixel of the
mask that is not an annotated hemorrhage is assigned to the first site it lies in:

- ``HE rim``: within ``2 R`` px of an annotated hemorrhage (the mask's border against the
  annotator's, or a lesion drawn smaller);
- ``MA``, ``EX``, ``SE``: within ``R`` px of an annotated microaneurysm, hard or soft exudate;
- ``OD``: on the optic disc;
- ``elsewhere``: none of these.

(Distances are city-block ones: the masks are widened by ``scipy.ndimage.binary_dilation``.)

The same for the probability mass above 0.1 on pixels that are not hemorrhage (what the ranking
behind AUPR sees), and the missed hemorrhage pixels beside the false ones. ``--crops N`` also
draws N batches of the run's own training crops (its config's sampler, seed 1) and reports, per
threshold, the share of crops whose most confident background pixel at least 8 px from any
lesion exceeds it, and where those lie (what ``data.hard_negatives`` would remember). Prints a
table and writes JSON. Reads ``../shared/data`` (the folds' photos and their masks).

    python benchmarks/false_alarm_sites.py --runs /work/cv/runs --variant default_zoom --folds 0,1 \\
        --steps 1000 [--radius 12] [--crops 60] [--out benchmarks/results/false_alarm_sites.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_presets as cp  # noqa: E402
from oof_report import fold_pairs  # noqa: E402

SITES = ("HE rim", "MA", "EX", "SE", "OD", "elsewhere")
OTHERS = ("MA", "EX", "SE", "OD")
THRESHOLDS = (0.5, 0.7, 0.9, 0.98)


def site_masks(pair, shape: tuple[int, int], he: np.ndarray, radius: int) -> list[np.ndarray]:
    """The sites in order (without ``elsewhere``), each a bool map of the photo."""
    types = pair.read_types(list(OTHERS), shape)
    out = [ndi.binary_dilation(he, iterations=2 * radius)]
    for t in OTHERS:
        lab = types.get(t)
        m = np.zeros(shape, bool) if lab is None else lab == 1
        out.append(m if t == "OD" or not m.any() else ndi.binary_dilation(m, iterations=radius))
    return out


def assign(values: np.ndarray, sites: list[np.ndarray]) -> dict[str, float]:
    """``values`` (a per-pixel weight, 0 where not counted) summed per first site."""
    left = values.astype(np.float64)
    out = {}
    for name, m in zip(SITES, sites):
        out[name] = float(left[m].sum())
        left = np.where(m, 0.0, left)
    out["elsewhere"] = float(left.sum())
    return out


def held_out(run: Path, variant: str, fold: int, images: str, radius: int) -> dict:
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    model = load_model_folder(run / "oof")
    _, report = fold_pairs(variant, fold, images)
    fp = dict.fromkeys(SITES, 0.0)
    mass = dict.fromkeys(SITES, 0.0)
    photos = []
    for pair in report:
        rgb, _ = read_image(pair.image)
        pred = run_to_end(predict(model, rgb, types=[]))
        he = pair.read_mask(pred.mask.shape) == 1
        sites = site_masks(pair, he.shape, he, radius)
        wrong = (pred.mask == 1) & ~he
        for k, v in assign(wrong, sites).items():
            fp[k] += v
        soft = np.where(he | (pred.probability <= 0.1), 0.0, pred.probability)
        for k, v in assign(soft, sites).items():
            mass[k] += v
        photos.append({"image": pair.id, "false_px": int(wrong.sum()), "found_px": int(((pred.mask == 1) & he).sum()),
                       "hemorrhage_px": int(he.sum())})
        print(f"  {pair.id}: false {photos[-1]['false_px']}, found {photos[-1]['found_px']} "
              f"of {photos[-1]['hemorrhage_px']}", flush=True)
    return {"false_px": fp, "mass": mass, "photos": photos}


def training_crops(run: Path, batches: int) -> dict:
    """The run's own sampler on its training photos; the last model predicts the crops."""
    from dataclasses import replace

    import torch
    import torch.nn.functional as F

    from lesionseg_training.data import PatchSampler, find_pairs, prepare_pair, split_pairs
    from lesionseg_training.train_config import TrainConfig
    from napari_lesionseg.core.dataclass_io import from_dict
    from napari_lesionseg.core.model_folder import load_model_folder

    cfg = from_dict(TrainConfig, json.loads((run / "config.json").read_text()))
    train, _ = split_pairs(find_pairs(cfg.data), cfg.data)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    outs = ["HE", *OTHERS]
    items = [prepare_pair(p, cfg.model.preprocess, cache, outs) for p in train]
    near = [[None if it.aux is None or not (it.aux[c] == 1).any()
             else (ndi.binary_dilation(it.aux[c] == 1, iterations=4) if t != "OD" else it.aux[c] == 1).ravel()
             for c, t in enumerate(OTHERS)] for it in items]
    sampler = PatchSampler([replace(it, aux=None) for it in items], cfg.data, seed=1)
    net = load_model_folder(run / "last").net
    best, where_at = [], []
    for _ in range(batches):
        x, y = sampler.batch()
        with torch.no_grad():
            p = torch.sigmoid(net(torch.from_numpy(x)).logits.float())[:, 0]
        lab = torch.from_numpy(y)
        close = F.max_pool2d((lab == 1).float()[:, None], 17, stride=1, padding=8)[:, 0] > 0
        ok = (lab == 0) & ~close & torch.from_numpy(sampler.last_where >= 0)
        v, at = torch.where(ok, p, torch.zeros_like(p)).flatten(1).max(1)
        for b in range(len(v)):
            k = int(sampler.last_idx[b])
            flat = int(sampler.last_where[b].ravel()[int(at[b])])
            site = next((t for t, m in zip(OTHERS, near[k]) if m is not None and m[flat]), "elsewhere")
            best.append(float(v[b]))
            where_at.append(site)
    best_a, sites = np.asarray(best), np.asarray(where_at)
    return {"crops": len(best), "share_above": {str(t): float((best_a > t).mean()) for t in THRESHOLDS},
            "sites_above": {str(t): {s: float((sites[best_a > t] == s).mean()) if (best_a > t).any() else 0.0
                                     for s in (*OTHERS, "elsewhere")} for t in THRESHOLDS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--images", default=str(cp.DATA))
    ap.add_argument("--radius", type=int, default=12, help="px at full size around the other types' lesions")
    ap.add_argument("--crops", type=int, default=0, help="batches of training crops to draw (0: none)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "false_alarm_sites.json")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(2)
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                    "variant": args.variant, "steps": args.steps, "radius": args.radius, "folds": {}}
    print(f"{'fold':>4} | " + " | ".join(f"{s:>9}" for s in SITES) + " | false px | missed px")
    for fold in map(int, args.folds.split(",")):
        run = args.runs / cp.run_name(args.variant, fold, None, args.steps)
        r = held_out(run, args.variant, fold, args.images, args.radius)
        if args.crops:
            r["training_crops"] = training_crops(run, args.crops)
        result["folds"][str(fold)] = r
        total = sum(r["false_px"].values())
        missed = sum(p["hemorrhage_px"] - p["found_px"] for p in r["photos"])
        print(f"{fold:>4} | " + " | ".join(f"{r['false_px'][s] / max(total, 1):>9.3f}" for s in SITES)
              + f" | {int(total)} | {missed}")
        if args.crops:
            c = r["training_crops"]
            print("      training crops with a background pixel >= 8 px from any lesion above "
                  + ", ".join(f"{t}: {c['share_above'][str(t)]:.2f}" for t in THRESHOLDS)
                  + f"; above 0.9, near MA: {c['sites_above']['0.9']['MA']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
