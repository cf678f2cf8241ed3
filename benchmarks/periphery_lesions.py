"""Where in the field a model's lesions lie, over many photos without labels: from a
``lesionseg predict`` output folder (its ``lesions.csv``), each lesion's distance from the centre
of the photo's round field of view as a share of its radius (the table's ``field_r``, since
2026-12-07; for an older table, found again from the photos given with ``--images``). Lesions spread over
the field as its area does on most photos; a photo with most of its lesions in the outer ring is
worth a look (on IDRiD's unlabelled photos: tessellated fundi, whose choroidal pattern the shipped
default takes for peripheral hemorrhages; README "Status").

    lesionseg predict --out OUT ../shared/data/idrid_unlabeled/images
    python benchmarks/periphery_lesions.py OUT [--type HE] [--images DIR: for a table without field_r]

Prints the lesion area by ring and the photos with the most lesions beyond ``--outer`` of the
radius; writes ``results/periphery_lesions.json``.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
RINGS = [(0.0, 0.5), (0.5, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.0)]


def main() -> None:
    from napari_lesionseg.core.fov import detect_fov
    from napari_lesionseg.core.image_io import read_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, help="a `lesionseg predict --out` folder")
    ap.add_argument("--images", type=Path, default=None,
                    help="the photos it predicted: only for a table written before lesions.csv had field_r")
    ap.add_argument("--type", default="HE", help="lesion type to count (lesions.csv's `type`)")
    ap.add_argument("--outer", type=float, default=0.8, help="the outer ring starts at this share of the radius")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "periphery_lesions.json")
    args = ap.parse_args()
    table = args.predictions / "lesions.csv"
    if not table.is_file():
        raise SystemExit(f"{table}: not found (run `lesionseg predict --out {args.predictions}` first)")
    with table.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("type") or "HE") == args.type]  # tables before types: HE
    fovs: dict[str, tuple[float, float, float]] = {}
    per_photo: dict[str, list[tuple[float, int]]] = defaultdict(list)
    unplaced = 0  # lesions of photos with no round field of view (cropped inside the retina)
    for r in rows:
        name = r["image"]
        if "field_r" in r:
            if not r["field_r"]:
                unplaced += 1
                continue
            d = float(r["field_r"])
        else:  # a table from before field_r: the field found again from the photo
            if args.images is None:
                raise SystemExit(f"{table}: written before lesions.csv had field_r; give the photos with --images")
            if name not in fovs:
                fov = detect_fov(read_image(args.images / name)[0])
                fovs[name] = (fov.cy, fov.cx, fov.radius)
            cy, cx, radius = fovs[name]
            d = float(np.hypot(float(r["centroid_y"]) - cy, float(r["centroid_x"]) - cx)) / radius
        per_photo[name].append((d, int(r["area_px"])))
    every = [x for v in per_photo.values() for x in v]
    if not every:
        raise SystemExit(f"{table}: no {args.type} lesions")
    dist = np.array([d for d, _ in every])
    area = np.array([a for _, a in every], dtype=np.float64)
    rings = [{"ring": [lo, hi], "lesions": int(((dist >= lo) & (dist < hi)).sum()),
              "area_share": round(float(area[(dist >= lo) & (dist < hi)].sum() / area.sum()), 4)}
             for lo, hi in RINGS]
    photos = sorted(({"image": k, "lesions": len(v), "outer": sum(d >= args.outer for d, _ in v)}
                     for k, v in per_photo.items()), key=lambda p: -p["outer"])
    if unplaced:
        print(f"{unplaced} {args.type} lesions left out: their photos have no round field of view")
    print(f"{len(every)} {args.type} lesions on {len(per_photo)} photos\n| ring (share of radius) | lesions | area share |\n|---|---|---|")
    for r in rings:
        print(f"| {r['ring'][0]}-{r['ring'][1]} | {r['lesions']} | {r['area_share']:.1%} |")
    print(f"\nmost lesions beyond {args.outer} of the radius:\n| photo | beyond | all |\n|---|---|---|")
    for p in photos[: args.top]:
        print(f"| {p['image']} | {p['outer']} | {p['lesions']} |")
    args.out.write_text(json_text({"predictions": str(args.predictions), "type": args.type, "outer": args.outer,
                                    "rings": rings, "unplaced": unplaced, "photos": photos}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
