"""Where the disc and the fovea land on many photos no model trained on (issue 14): the bundled
five-output model's disc and fovea on a folder of unlabelled photos, checked without labels.

Every photo gives label-free checks of the shipped path (``core/anatomy.py``): a disc found; its
size within the range of IDRiD's 54 annotated discs (0.116-0.187 of the fundus diameter; a disc
outside it is most likely one the model cut short or spread into the surrounding atrophy, which
misplaces an estimated fovea and rescales every distance in disc diameters, DD); the fovea
*found* in the photo rather than estimated from the disc. The found foveas also say where a
fovea lies relative to the disc (the rule an estimate follows: 2.5 DD temporal, 0.3 DD below),
scored here as the distance between where the rule would put them and where they were found.

    python benchmarks/anatomy_many.py [--images ../shared/data/idrid_unlabeled/images] [--limit N]

Writes ``results/anatomy_many.json`` (every photo) and ``results/anatomy_many_sheet.jpg`` (the
photos the checks flag, then a sample of the rest: the disc in white, the fovea as a yellow
circle of 1 DD, solid when found, dashed when estimated, the field's centre as a magenta cross) and prints the counts. Reads
``../shared/data`` (not shipped with a clone).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid_unlabeled" / "images"
ANNOTATED_DISC_SHARE = (0.116, 0.187)  # disc diameter / fundus diameter, IDRiD's 54 annotated discs


def check_photo(model, path: Path) -> dict:
    """One photo's disc, fovea and the three checks."""
    from napari_lesionseg.core.fov import detect_fov
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.progress import run_to_end

    rgb, _ = read_image(path)
    fov = detect_fov(rgb)
    pred = run_to_end(predict(model, rgb, fov=fov, types=["OD"]))
    a = pred.anatomy
    row = {"image": path.name, "fov": [fov.cy, fov.cx, fov.radius], "note": a.note,
           "disc_centre": list(a.disc_centre) if a.disc_centre else None, "disc_diameter": a.disc_diameter,
           "disc_share": a.disc_diameter / (2 * fov.radius) if a.disc_diameter else None,
           "fovea": list(a.fovea) if a.fovea else None, "fovea_method": a.fovea_method}
    lo, hi = ANNOTATED_DISC_SHARE
    row["flags"] = [f for f, bad in [
        ("no disc", a.disc_centre is None),
        ("disc size unusual", row["disc_share"] is not None and not lo <= row["disc_share"] <= hi),
        ("fovea estimated", a.disc_centre is not None and a.fovea_method != "found in the photo"),
    ] if bad]
    return row


def offsets(row: dict) -> tuple[float, float]:
    """A found fovea's place relative to the disc centre in DD: (temporal, below)."""
    (dy, dx), (fy, fx), dd = row["disc_centre"], row["fovea"], row["disc_diameter"]
    return abs(fx - dx) / dd, (fy - dy) / dd


def rule_error(row: dict) -> float:
    """How far (DD) the estimate rule puts the fovea from where it was found (on its found side)."""
    from napari_lesionseg.core.anatomy import FOVEA_BELOW_DD, FOVEA_DD

    t, b = offsets(row)
    return float(np.hypot(t - FOVEA_DD, b - FOVEA_BELOW_DD))


def thumbnail(path: Path, row: dict, width: int = 320) -> Image.Image:
    """The photo with its disc and fovea drawn, and its name and flags written on it."""
    im = Image.open(path).convert("RGB")
    s = width / im.width
    im = im.resize((width, round(im.height * s)))
    d = ImageDraw.Draw(im)
    if row["disc_centre"]:
        (y, x), r = row["disc_centre"], row["disc_diameter"] / 2
        d.ellipse([(x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s], outline=(255, 255, 255), width=2)
        if row["fovea"]:
            (fy, fx), rr = row["fovea"], row["disc_diameter"]
            box = [(fx - rr) * s, (fy - rr) * s, (fx + rr) * s, (fy + rr) * s]
            if row["fovea_method"] == "found in the photo":
                d.ellipse(box, outline=(255, 230, 0), width=2)
            else:
                for k in range(0, 360, 30):
                    d.arc(box, k, k + 15, fill=(255, 230, 0), width=2)
    cy, cx, _ = row["fov"]
    d.line([(cx * s - 5, cy * s), (cx * s + 5, cy * s)], fill=(255, 0, 255))
    d.line([(cx * s, cy * s - 5), (cx * s, cy * s + 5)], fill=(255, 0, 255))
    d.text((4, 4), row["image"].replace(".jpg", ""), fill=(255, 255, 255))
    d.text((4, 16), ", ".join(row["flags"]) or "ok", fill=(255, 120, 120) if row["flags"] else (160, 255, 160))
    return im


def contact_sheet(paths: dict[str, Path], rows: list[dict], out: Path, n: int = 30, cols: int = 6) -> None:
    """The first ``n`` flagged photos, then unflagged ones spread evenly over the rest to fill ``n``."""
    pick = [r for r in rows if r["flags"]][:n]
    rest = [r for r in rows if not r["flags"]]
    if len(pick) < n and rest:
        pick += rest[:: max(1, len(rest) // (n - len(pick)))][: n - len(pick)]
    tiles = [thumbnail(paths[r["image"]], r) for r in pick]
    if not tiles:
        return
    w, h = tiles[0].width, max(t.height for t in tiles)
    sheet = Image.new("RGB", (cols * w, math.ceil(len(tiles) / cols) * h))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    sheet.save(out, quality=85)


def main() -> None:
    from napari_lesionseg.core.bundled import resolve_model
    from napari_lesionseg.core.model_folder import load_model_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=str(DATA))
    ap.add_argument("--model", default="multi")
    ap.add_argument("--limit", type=int, default=0, help="the first N photos only (0: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "anatomy_many.json"))
    args = ap.parse_args()
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff"})
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        sys.exit(f"no photos in {args.images}")
    model = load_model_folder(resolve_model(args.model))
    rows, t0 = [], time.perf_counter()
    for i, p in enumerate(paths):
        rows.append(check_photo(model, p))
        if rows[-1]["flags"] or (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(paths)} {p.name}: {', '.join(rows[-1]['flags']) or 'ok'}", flush=True)
    seconds = time.perf_counter() - t0
    n = len(rows)
    count = {f: sum(f in r["flags"] for r in rows) for f in ["no disc", "disc size unusual", "fovea estimated"]}
    usual = [r for r in rows if r["disc_centre"] and "disc size unusual" not in r["flags"]]
    unusual = [r for r in rows if "disc size unusual" in r["flags"]]
    found = [r for r in rows if r["fovea_method"] == "found in the photo"]
    off = np.array([offsets(r) for r in found]).reshape(-1, 2)
    err = np.array([rule_error(r) for r in found])
    shares = np.array([r["disc_share"] for r in rows if r["disc_share"]])

    def q(a: np.ndarray, pcts: list[float]) -> list[float] | None:
        return [round(float(v), 3) for v in np.percentile(a, pcts)] if a.size else None

    summary = {"photos": n, "model": args.model, "images": str(args.images), "seconds": round(seconds, 1),
               **{k: v for k, v in count.items()},
               "fovea_found_usual_disc": [sum(r["fovea_method"] == "found in the photo" for r in usual), len(usual)],
               "fovea_found_unusual_disc": [sum(r["fovea_method"] == "found in the photo" for r in unusual), len(unusual)],
               "found_temporal_dd_q25_50_75": q(off[:, 0], [25, 50, 75]),
               "found_below_dd_q25_50_75": q(off[:, 1], [25, 50, 75]),
               "rule_error_dd_q50_90": q(err, [50, 90]),
               "rule_error_within_half_dd": round(float((err <= 0.5).mean()), 3) if err.size else None,
               "disc_share_of_fundus_min_q50_max": q(shares, [0, 50, 100])}
    out = Path(args.out)
    out.write_text(json_text({"summary": summary, "photos": rows}, indent=1))
    contact_sheet({p.name: p for p in paths}, rows, out.with_name(out.stem + "_sheet.jpg"))
    print(f"\n{n} photos in {seconds:.0f} s, model {args.model}")
    print("| check | photos | share |\n|---|---|---|")
    for k, v in count.items():
        print(f"| {k} | {v} | {v / n:.1%} |")
    for k in list(summary)[7:]:
        print(f"{k}: {summary[k]}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
