"""Benchmark: could a classical detector place the optic disc for a model without a disc output
(the HE-only default, whose lesions then have no disc-relative distance or zone)? The detector:
the brightest blob of the network input's three standardised colour channels summed (the mean
within the fundus over 0.04 of the fundus diameter minus that over 0.25, with the fovea
finder's masked blur, inside the fundus less a 3 % rim). Measured two ways:

- ``--annotated``: IDRiD's annotated photos with their disc masks, the distance of the found
  centre from the annotated disc's in disc diameters (DD); odd-numbered photos chose the
  channels (the three summed against green alone), even-numbered ones report;
- ``--against``: a folder of unlabelled photos against the discs an ``anatomy_many.py`` JSON
  holds (the bundled ``multi`` model's learned disc output).

    python benchmarks/bright_disc.py --annotated ../shared/data/idrid/train \\
        --against results/anatomy_many_multi_pair_2026-12-04.json --photos ../shared/data/idrid_unlabeled/images

Prints a table and writes ``results/bright_disc.json``. Measured on 2026-12-07 (closing note of
that sitting): 27 of 27 reporting photos within 0.5 DD; 488 of 497 unlabelled photos within
0.5 DD of the ``multi`` pair's disc, the other nine (by eye) all the detector's mistakes (hard
exudate clusters, rim artefacts): not built into the product.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
SMALL, LARGE, RIM = 0.04, 0.25, 0.03  # shares of the fundus diameter: the blob, its background, the rim left out


def bright_disc(x: np.ndarray, disc: np.ndarray, fundus_diameter: float, channels: str = "sum"
                ) -> tuple[float, float]:
    """``(y, x)`` on the working grid of the brightest disc-sized blob of ``x`` (the network
    input, ``(C, h, w)``) inside the fundus ``disc``; ``channels``: ``sum`` (the three colour
    channels summed) or ``green``. The blurs are the fovea finder's (``anatomy._masked_blur``)."""
    from napari_lesionseg.core.anatomy import _masked_blur

    ch = (x[:3].sum(0) if channels == "sum" else x[1]).astype(np.float32)
    v = _masked_blur(ch, disc, SMALL * fundus_diameter) - _masked_blur(ch, disc, LARGE * fundus_diameter)
    inner = ndimage.binary_erosion(disc, iterations=max(1, int(RIM * fundus_diameter)))
    y, x_ = np.unravel_index(np.argmax(np.where(inner, v, -np.inf)), v.shape)
    return float(y), float(x_)


def annotated(root: Path) -> dict:
    from napari_lesionseg.core.image_io import read_image, read_mask
    from napari_lesionseg.core.preprocess import mask_to_work, prepare

    rows = {}
    for img in sorted((root / "images").glob("*.jpg")):
        od_path = root / "masks_OD" / f"{img.stem}_OD.tif"
        if not od_path.is_file():
            continue
        rgb, _ = read_image(img)
        x, geom, disc = prepare(rgb, 832, 24.0)
        od = mask_to_work(read_mask(od_path, shape=rgb.shape[:2]), geom) > 0.5
        cy, cx = ndimage.center_of_mass(od)
        dd = 2 * math.sqrt(float(od.sum()) / math.pi)
        fd = 2 * geom.fov.radius * geom.scale[1]
        rows[img.stem] = {c: round(math.dist(bright_disc(x, disc, fd, c), (cy, cx)) / dd, 3) for c in ("sum", "green")}
    out = {"photos": rows}
    for half, odd in (("choose", 1), ("report", 0)):
        ids = [k for k in rows if int(k[-2:]) % 2 == odd]
        out[half] = {c: {"photos": len(ids), "within_half_dd": sum(rows[k][c] < 0.5 for k in ids),
                         "misses": [k for k in ids if rows[k][c] >= 0.5]} for c in ("sum", "green")}
    return out


def against(ref_json: Path, photos: Path) -> dict:
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.preprocess import prepare

    rows = []
    for r in json.loads(ref_json.read_text())["photos"]:
        if not r.get("disc_centre") or not r.get("disc_diameter"):
            continue
        rgb, _ = read_image(photos / r["image"])
        x, geom, disc = prepare(rgb, 832, 24.0)
        fov = geom.fov
        iy, ix = geom.to_input(*bright_disc(x, disc, 2 * fov.radius * geom.scale[1]))
        fcy, fcx, fr = r["fov"]  # the reference's coordinates, normalised by its own field
        theirs = ((r["disc_centre"][0] - fcy) / fr, (r["disc_centre"][1] - fcx) / fr)
        mine = ((iy - fov.cy) / fov.radius, (ix - fov.cx) / fov.radius)
        rows.append({"image": r["image"], "dd": round(math.dist(mine, theirs) / (r["disc_diameter"] / fr), 3)})
    far = [r for r in rows if r["dd"] >= 0.5]
    return {"reference": str(ref_json), "photos": len(rows), "within_half_dd": len(rows) - len(far), "apart": far}


def main() -> None:
    from napari_lesionseg.core.jsonfile import json_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotated", type=Path, help="IDRiD-layout root with images/ and masks_OD/")
    ap.add_argument("--against", type=Path, help="an anatomy_many.py JSON (the multi model's discs)")
    ap.add_argument("--photos", type=Path, help="the photos that JSON describes")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bright_disc.json")
    args = ap.parse_args()
    if args.against is not None and args.photos is None:
        ap.error("--against needs --photos")
    t0, res = time.perf_counter(), {"date": time.strftime("%Y-%m-%d %H:%M")}
    if args.annotated is not None:
        res["annotated"] = a = annotated(args.annotated)
        print("| photos | channels | within 0.5 DD of the annotated disc | misses |\n|---|---|---|---|")
        for half in ("choose", "report"):
            for c, f in a[half].items():
                print(f"| {half} | {c} | {f['within_half_dd']} of {f['photos']} | {', '.join(f['misses']) or '-'} |")
    if args.against is not None:
        res["against"] = b = against(args.against, args.photos)
        print(f"\nagainst {args.against.name}: {b['within_half_dd']} of {b['photos']} within 0.5 DD; apart: "
              + ", ".join(f"{r['image']} ({r['dd']:.1f} DD)" for r in b["apart"]))
    args.out.write_text(json_text(res, indent=1))
    print(f"{time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
