"""Benchmark: the optic disc for a model without a disc output (core/disc_locator.py: one of the
bundled ``multi`` model's networks, one view, on a 320-px grid) against the ``multi`` model as it
runs for its own predictions (both networks, its 832-px grid, a mirror view), and against the
annotated discs.

- ``--against`` / ``--photos``: a folder of unlabelled photos and an ``anatomy_many.py`` JSON of
  ``multi``'s discs and foveas on them. The disc threshold is chosen on the photos at odd
  positions (sorted by name): of those that place most discs within 0.5 DD of ``multi``'s, the one
  whose median diameter ratio to ``multi``'s lies nearest 1; reported on the even ones, with the centre's and the fovea's distance from ``multi``'s in
  its disc diameters (DD) and the seconds per photo (the locator's whole call: the coarse grid's
  preparation, the network, the region and the fovea).
- ``--annotated``: IDRiD's annotated photos (``images/``, ``masks_OD/``): the distance of the
  locator's and of ``multi``'s own disc centre from the annotated disc's, and the diameter ratios.
  ``multi`` trained on these photos (but the two samples), so this is no out-of-sample accuracy.

    python benchmarks/disc_locator.py --against results/anatomy_many_multi_pair_2026-12-04.json \\
        --photos ../shared/data/idrid_unlabeled/images --annotated ../shared/data/idrid/train

Prints tables and writes ``results/disc_locator.json``. Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.24, 0.4, 0.5, 0.6, 0.7, 0.8)
GRID_OF_DEFAULT = 832  # the working grid of the models that call the locator (the default's)


def _stats(v: list[float]) -> dict:
    a = np.asarray(v, float)
    return {"n": int(a.size), "median": round(float(np.median(a)), 3), "q10": round(float(np.quantile(a, 0.1)), 3),
            "q90": round(float(np.quantile(a, 0.9)), 3), "max": round(float(a.max()), 3)} if a.size else {"n": 0}


def against(ref_json: Path, photos: Path) -> dict:
    import torch

    from napari_lesionseg.core import disc_locator
    from napari_lesionseg.core.anatomy import disc_region, locate_region
    from napari_lesionseg.core.fov import detect_fov
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.preprocess import prepare_with_work
    from napari_lesionseg.core.runtime import autocast_dtype

    dev = torch.device("cpu")
    dtype = autocast_dtype("auto", dev)
    refs = sorted(json.loads(ref_json.read_text())["photos"], key=lambda r: r["image"])
    rows = []
    for i, r in enumerate(refs):
        rgb, _ = read_image(photos / r["image"])
        fov = detect_fov(rgb)
        work = prepare_with_work(rgb, GRID_OF_DEFAULT, 24.0, fov)[3]  # what predict has made before it calls the locator
        _, seconds = disc_locator.locate_disc(rgb, fov, dev, dtype, work)  # the call as predict makes it, timed
        p, x, geom, disc = disc_locator.disc_probability(rgb, fov, dev, dtype, work)
        row = {"image": r["image"], "half": "choose" if i % 2 else "report", "seconds": round(seconds, 4),
               "multi_disc": bool(r.get("disc_centre"))}
        for t in THRESHOLDS:
            a = locate_region(disc_region(p, t, disc, geom), x[1], disc, geom)
            if a.disc_centre is None or not r.get("disc_centre"):
                row[str(t)] = {"disc": a.disc_centre is not None}
                continue
            dd = r["disc_diameter"]
            row[str(t)] = {"disc": True, "centre_dd": round(math.dist(a.disc_centre, r["disc_centre"]) / dd, 4),
                           "diameter_ratio": round(a.disc_diameter / dd, 4),
                           "fovea_dd": round(math.dist(a.fovea, r["fovea"]) / dd, 4) if r.get("fovea") else None}
        rows.append(row)

    def summary(half: str, t: float) -> dict:
        got = [r[str(t)] for r in rows if r["half"] == half]
        both = [g for g in got if "centre_dd" in g]
        return {"photos": len(got), "both_found": len(both),
                "only_multi": sum(1 for r in rows if r["half"] == half and r["multi_disc"] and not r[str(t)]["disc"]),
                "only_locator": sum(1 for r in rows if r["half"] == half and not r["multi_disc"] and r[str(t)]["disc"]),
                "centre_within_half_dd": sum(g["centre_dd"] < 0.5 for g in both),
                "fovea_within_half_dd": sum(g["fovea_dd"] is not None and g["fovea_dd"] < 0.5 for g in both),
                "centre_dd": _stats([g["centre_dd"] for g in both]),
                "diameter_ratio": _stats([g["diameter_ratio"] for g in both]),
                "apart": [(r["image"], r[str(t)]["centre_dd"]) for r in rows
                          if r["half"] == half and r[str(t)].get("centre_dd", 0) >= 0.5]}

    choose = {str(t): summary("choose", t) for t in THRESHOLDS}
    chosen = min(THRESHOLDS, key=lambda t: (-choose[str(t)]["centre_within_half_dd"],
                                            abs(choose[str(t)]["diameter_ratio"]["median"] - 1)))
    return {"reference": str(ref_json), "chosen_threshold": chosen, "shipped_threshold": disc_locator.THRESHOLD,
            "choose": choose, "report": {str(t): summary("report", t) for t in THRESHOLDS},
            "seconds": _stats([r["seconds"] for r in rows]), "photos": rows}


def annotated(root: Path) -> dict:
    import torch
    from scipy import ndimage

    from napari_lesionseg.core import disc_locator
    from napari_lesionseg.core.bundled import bundled_model_dir
    from napari_lesionseg.core.fov import detect_fov
    from napari_lesionseg.core.image_io import read_image, read_mask
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.preprocess import prepare_with_work
    from napari_lesionseg.core.runtime import autocast_dtype

    dev = torch.device("cpu")
    multi = load_model_folder(bundled_model_dir("multi"))
    rows = []
    for img in sorted((root / "images").glob("*.jpg")):
        od_path = root / "masks_OD" / f"{img.stem}_OD.tif"
        if not od_path.is_file():
            continue
        rgb, _ = read_image(img)
        od = read_mask(od_path, shape=rgb.shape[:2]) > 0
        cy, cx = ndimage.center_of_mass(od)
        dd = 2 * math.sqrt(float(od.sum()) / math.pi)
        row = {"image": img.stem}
        fov = detect_fov(rgb)
        work = prepare_with_work(rgb, GRID_OF_DEFAULT, 24.0, fov)[3]
        loc = disc_locator.locate_disc(rgb, fov, dev, autocast_dtype("auto", dev), work)[0]
        own = run_to_end(predict(multi, rgb, types=["OD"])).anatomy
        for name, a in (("locator", loc), ("multi", own)):
            row[name] = None if a.disc_centre is None else {
                "centre_dd": round(math.dist(a.disc_centre, (cy, cx)) / dd, 4),
                "diameter_ratio": round(a.disc_diameter / dd, 4)}
        rows.append(row)
    out = {"photos": rows}
    for name in ("locator", "multi"):
        got = [r[name] for r in rows if r[name] is not None]
        out[name] = {"found": len(got), "of": len(rows), "centre_within_half_dd": sum(g["centre_dd"] < 0.5 for g in got),
                     "centre_dd": _stats([g["centre_dd"] for g in got]),
                     "diameter_ratio": _stats([g["diameter_ratio"] for g in got])}
    return out


def main() -> None:
    from napari_lesionseg.core.jsonfile import json_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="an anatomy_many.py JSON (the multi model's discs)")
    ap.add_argument("--photos", type=Path, help="the photos that JSON describes")
    ap.add_argument("--annotated", type=Path, help="IDRiD-layout root with images/ and masks_OD/")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "disc_locator.json")
    args = ap.parse_args()
    if (args.against is None) != (args.photos is None):
        ap.error("--against and --photos go together")
    t0, res = time.perf_counter(), {"date": time.strftime("%Y-%m-%d %H:%M")}
    if args.against is not None:
        res["against"] = b = against(args.against, args.photos)
        print("| half | threshold | photos | both found | only multi / only locator | centre within 0.5 DD | "
              "centre DD median (q90) | diameter ratio median (q10-q90) | fovea within 0.5 DD |\n"
              "|---|---|---|---|---|---|---|---|---|")
        for half in ("choose", "report"):
            for t, s in b[half].items():
                print(f"| {half} | {t} | {s['photos']} | {s['both_found']} | {s['only_multi']} / {s['only_locator']} | "
                      f"{s['centre_within_half_dd']} | {s['centre_dd'].get('median')} ({s['centre_dd'].get('q90')}) | "
                      f"{s['diameter_ratio'].get('median')} ({s['diameter_ratio'].get('q10')}-"
                      f"{s['diameter_ratio'].get('q90')}) | {s['fovea_within_half_dd']} |")
        sec = b["seconds"]
        print(f"\nthreshold chosen on the odd half: {b['chosen_threshold']} (shipped: {b['shipped_threshold']}); "
              f"seconds per photo median {sec['median']} (q90 {sec['q90']})")
    if args.annotated is not None:
        res["annotated"] = a = annotated(args.annotated)
        print("\n| disc from | found | centre within 0.5 DD of the annotated | centre DD median (max) | "
              "diameter ratio median (q10-q90) |\n|---|---|---|---|---|")
        for name in ("locator", "multi"):
            s = a[name]
            print(f"| {name} | {s['found']} of {s['of']} | {s['centre_within_half_dd']} | {s['centre_dd'].get('median')} "
                  f"({s['centre_dd'].get('max')}) | {s['diameter_ratio'].get('median')} "
                  f"({s['diameter_ratio'].get('q10')}-{s['diameter_ratio'].get('q90')}) |")
    args.out.write_text(json_text(res, indent=1))
    print(f"{time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
