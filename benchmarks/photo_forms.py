"""Photos in other forms than a full colour fundus photograph, scored against IDRiD's hemorrhage
masks: crops inside the retina (no dark surround; a region of interest, a camera with a
rectangular field) and gray copies (the green channel, as a red-free photo shows it).

For each annotated photo, three crops (60 % of the height and width round the centre of its
field of view; 50 % left and right of it) are segmented with the field of view the detector
finds now (a crop: the whole crop) and with the one it found before 2026-12-05 (a circle fitted
round some bright region inside the retina, which set the working scale and masked out the
rest), beside the whole photo's mask over the crop's region; only crops where the two fields
of view differ are scored. ``--gray`` also scores each whole photo and its gray copy, fed as
the network sees a gray photo now (a red channel of zeros) and as before 2026-12-05 (the gray
copied into red). How to feed gray was chosen on the 26 photos of odd place (the second, the
fourth, ...); the other 27 report it apart.

    python benchmarks/photo_forms.py [--model default] [--gray] [--limit N]
    python benchmarks/photo_forms.py --surround
    python benchmarks/photo_forms.py --dark [--limit N]

``--surround`` runs no model: the shares of lit and of lit retina-like pixels outside the circle
the detector fits (``fov.fit_circle``), on every IDRiD photo (annotated and not), on four crops
of every fifth and on copies of every fifth with a camera's text or panel in the surround
(``_banners``): what ``fov.MAX_LIT_OUTSIDE`` is set between. ``--banners`` scores the default on
the annotated photos' banner copies beside the photos themselves. ``--dark`` darkens each
annotated photo (an underexposed capture) and says where its mask degrades and whether
``fov.dark_doubt`` warns (``dark``).

The photos are those the bundled models were trained on (both arms alike: the comparison, not the
level, is the finding). Prints pooled and mean per-photo Dice, recall and precision per arm;
writes ``results/photo_forms.json``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
CROPS = ((0.6, 0.5), (0.5, 0.35), (0.5, 0.65))  # (share of height and width, share of the width left of the centre)


def _annotated(limit: int = 0):
    """The annotated photos (the first ``limit``; 0: all): each one's path, RGB and hemorrhage mask."""
    from napari_lesionseg.core.image_io import read_image, read_mask

    photos = [p for p in sorted((DATA / "images").glob("*.jpg")) if (DATA / "masks_HE" / f"{p.stem}_HE.tif").exists()]
    for photo in photos[: limit or None]:
        yield photo, read_image(photo)[0], read_mask(DATA / "masks_HE" / f"{photo.stem}_HE.tif") > 0


def _counts(mask: np.ndarray, gt: np.ndarray) -> list[int]:
    return [int((mask & gt).sum()), int(mask.sum()), int(gt.sum())]


def _summary(rows: list[dict], arm: str) -> dict[str, float]:
    tp, pp, gg = (sum(r[arm][k] for r in rows) for k in range(3))
    per = [2 * r[arm][0] / (r[arm][1] + r[arm][2]) for r in rows if r[arm][1] + r[arm][2]]
    return {"pooled_dice": 2 * tp / max(pp + gg, 1), "recall": tp / max(gg, 1), "precision": tp / max(pp, 1),
            "mean_dice": float(np.mean(per)) if per else float("nan"), "n": len(rows)}


def _banners(rgb: np.ndarray, fov) -> dict[str, np.ndarray]:
    """Copies of a photo with what some cameras print in the dark surround: a light-gray info
    panel left of the fundus, white blocks of text in the four corners, a blue title bar over
    the top 5 % of the photo (over the fundus where it reaches the top, as in IDRiD); and a
    white frame round the photo (a scan's or an export's border, 1 % of its width)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    panel = rgb.copy()
    panel[((xx - fov.cx) ** 2 + (yy - fov.cy) ** 2 > (1.03 * fov.radius) ** 2) & (xx < fov.cx - 0.5 * fov.radius)] = 200
    im = Image.fromarray(rgb.copy())
    draw, bw, bh = ImageDraw.Draw(im), w // 8, h // 8
    for x, y in ((5, 5), (5, h - bh - 5), (w - bw - 5, 5), (w - bw - 5, h - bh - 5)):
        for k in range(6):
            draw.rectangle([x, y + bh * k // 6, x + bw, y + bh * k // 6 + bh // 10], fill=(255, 255, 255))
    bar = rgb.copy()
    bar[: h // 20] = (40, 60, 160)
    m = max(1, w // 100)
    frame = np.pad(rgb, ((m, m), (m, m), (0, 0)), constant_values=255)
    return {"gray panel": panel, "text blocks": np.asarray(im), "blue bar": bar, "white frame": frame}


def surround() -> dict:
    """The shares of lit and of lit retina-like pixels outside the fitted circle on real photos,
    on crops of them and on copies with a camera's text or panel in the surround."""
    from PIL import Image

    from napari_lesionseg.core import fov as F

    files = sorted((DATA / "images").glob("*.jpg")) + sorted((DATA.parent.parent / "idrid_unlabeled" / "images").glob("*"))
    groups: dict[str, list] = {"photos": [], "crops": [], "gray panel": [], "text blocks": [], "blue bar": [],
                               "white frame": []}
    for k, path in enumerate(files):
        im = Image.open(path)
        im.draft("RGB", (im.width // 4, im.height // 4))  # the detector works at 512 px anyway
        rgb = np.asarray(im.convert("RGB"))
        groups["photos"].append(F.fit_circle(rgb))
        if k % 5 == 0:
            f = F.detect_fov(rgb)
            h, w = rgb.shape[:2]
            for frac, left in ((0.6, 0.5), (0.5, 0.35), (0.5, 0.65), (0.45, 0.5)):
                ch, cw = int(h * frac), int(w * frac)
                y0, x0 = max(0, int(f.cy - ch / 2)), max(0, int(f.cx - cw * left))
                crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])
                fit = F.fit_circle(crop)
                if fit is not None and fit.fov.radius < 0.5 * max(crop.shape[:2]):
                    groups["crops"].append(fit)  # a circle under half the crop: round a bright region inside it
            for name, copy in _banners(rgb, f).items():
                groups[name].append(F.fit_circle(copy))
    out: dict = {"threshold": F.MAX_LIT_OUTSIDE, "n_files": len(files)}
    print(f"{'':<14}{'n':>5}{'lit outside':>20}{'retina-like outside':>22}   whole image now (lit / retina-like rule)")
    for name, fits in groups.items():
        fits = [f for f in fits if f is not None]
        row = {"n": len(fits)}
        for rule in ("lit_outside", "retina_outside"):
            v = [getattr(f, rule) for f in fits]
            row[rule] = {"min": min(v), "max": max(v), "over_threshold": sum(x > F.MAX_LIT_OUTSIDE for x in v)}
        out[name] = row
        lit, ret = row["lit_outside"], row["retina_outside"]
        print(f"{name:<14}{row['n']:>5}{lit['min']:>10.4f}..{lit['max']:.4f}{ret['min']:>12.4f}..{ret['max']:.4f}"
              f"   {lit['over_threshold']} / {ret['over_threshold']}")
    return out


def banners(model, limit: int = 0) -> dict:
    """Hemorrhage Dice of ``model`` on each annotated photo and on its copies with a gray panel
    or text blocks in the surround: with the field of view found now, and with the whole image
    (what the detector took for them when any lit pixel outside counted). The blue bar lies
    over the retina in IDRiD's photos (their fundus reaches the top): not scored."""
    from napari_lesionseg.core import fov as F
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.progress import run_to_end

    rows: list[dict] = []
    t0 = time.time()
    for photo, rgb, gt in _annotated(limit):
        fov = F.detect_fov(rgb)
        row = {"photo": photo.stem, "photo_itself": _counts(run_to_end(predict(model, rgb)).mask > 0, gt)}
        for name, copy in _banners(rgb, fov).items():
            if name == "blue bar":
                continue
            now = F.detect_fov(copy)
            m = (copy.shape[1] - rgb.shape[1]) // 2  # the frame's width (0: no frame)
            row[f"{name}, now"] = _counts(run_to_end(predict(model, copy, fov=now)).mask[m:m + gt.shape[0], m:m + gt.shape[1]] > 0, gt)
            if name != "white frame":  # before 2026-12-05 evening: the whole image (a frame: a circle 41-57 % too large)
                row[f"{name}, before"] = _counts(run_to_end(predict(model, copy, fov=F.whole_image(copy.shape[:2]))).mask > 0, gt)
            row[f"{name}, same circle"] = max(abs(now.cx - m - fov.cx), abs(now.cy - m - fov.cy),
                                              abs(now.radius - fov.radius)) < 0.01 * fov.radius
        rows.append(row)
        print(f"{photo.stem} done", flush=True)
    arms = ["photo_itself"] + [f"{n}, {w}" for n in ("gray panel", "text blocks") for w in ("now", "before")] + [
        "white frame, now"]
    out = {"machine": platform.processor() or platform.machine(), "seconds": time.time() - t0,
           "same_circle": {n: sum(r[f"{n}, same circle"] for r in rows) for n in ("gray panel", "text blocks", "white frame")},
           "summary": {a: _summary(rows, a) for a in arms}, "rows": rows}
    print(f"\n{'photos':<26}{'n':>5}{'pooled Dice':>13}{'recall':>8}{'precision':>10}{'mean Dice':>10}")
    for a in arms:
        s = out["summary"][a]
        print(f"{a:<26}{s['n']:>5}{s['pooled_dice']:>13.3f}{s['recall']:>8.3f}{s['precision']:>10.3f}{s['mean_dice']:>10.3f}")
    print(f"the photo's own circle found again (within 1 % of its radius): {out['same_circle']} of {len(rows)}")
    return out


DARKEN = (1, 4, 6, 8, 10, 12)  # each photo's brightness divided by these


def retina_median(rgb: np.ndarray) -> float:
    """What ``fov.dark_doubt`` reads, on the field of view the detector finds."""
    from napari_lesionseg.core import fov as F

    return F.retina_median(rgb, F.detect_fov(rgb)) or 0.0


def _dark_split(rows: list[dict]) -> dict:
    """The warning level chosen on every second photo (IDRiD_02, 04, ...: the lowest retina median
    that warns of every copy whose mask collapsed, Dice under 0.5 against the photo as it is) and
    how it does on the others."""
    def copies(rs: list[dict]) -> list[tuple[float, float, list[int]]]:
        return [(r[f]["median"], 2 * r[f]["as_is"][0] / max(r[f]["as_is"][1] + r[f]["as_is"][2], 1), r[f]["gt"])
                for r in rs for f in map(str, DARKEN) if f != "1"]

    def pooled(cs: list) -> float:
        tp, pp, gg = (sum(c[2][k] for c in cs) for k in range(3))
        return 2 * tp / max(pp + gg, 1)

    chosen, other = copies(rows[1::2]), copies(rows[0::2])
    level = next(t for t in range(1, 256) if all(c[0] < t for c in chosen if c[1] < 0.5))
    collapsed = [c for c in other if c[1] < 0.5]
    return {"chosen_on": len(rows[1::2]), "reported_on": len(rows[0::2]), "level": level, "copies": len(other),
            "warned": sum(c[0] < level for c in other), "collapsed": len(collapsed),
            "collapsed_warned": sum(c[0] < level for c in collapsed),
            "unwarned_pooled_dice": pooled([c for c in other if c[0] >= level]),
            "as_is_pooled_dice": pooled([(0, 0, r["1"]["gt"]) for r in rows[0::2]])}


def dark(model, limit: int = 0) -> dict:
    """Each annotated photo darkened (its pixels divided by each of ``DARKEN``, as an
    underexposed capture): hemorrhage Dice against IDRiD's mask and against the mask on the
    photo as it is, the retina's median brightness, and whether ``fov.dark_doubt`` warns; and
    that median over every IDRiD photo (annotated and not), as they are: where
    ``fov.DARK_MEDIAN`` is set."""
    from PIL import Image

    from napari_lesionseg.core import fov as F
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.progress import run_to_end

    every = sorted((DATA / "images").glob("*.jpg")) + sorted((DATA.parent.parent / "idrid_unlabeled").rglob("*.jpg"))
    medians = []
    for p in every:
        im = Image.open(p)
        im.draft("RGB", (im.width // 8, im.height // 8))
        medians.append(retina_median(np.asarray(im.convert("RGB"))))
    rows: list[dict] = []
    t0 = time.time()
    for photo, rgb, gt in _annotated(limit):
        row: dict = {"photo": photo.stem}
        for f in DARKEN:
            dim = np.clip(np.round(rgb.astype(np.float32) / f), 0, 255).astype(np.uint8)
            pred = run_to_end(predict(model, dim))
            m = pred.mask > 0
            if f == 1:
                itself = m
            fov = F.detect_fov(dim)  # what predict found too: once for the median and the warning
            row[str(f)] = {"gt": _counts(m, gt), "as_is": _counts(m, itself),
                           "median": F.retina_median(dim, fov) or 0.0, "warned": F.dark_doubt(dim, fov) is not None}
        rows.append(row)
        print(f"{photo.stem} done", flush=True)
    summary = {}
    for f in DARKEN:
        k = str(f)
        agree = [2 * r[k]["as_is"][0] / max(r[k]["as_is"][1] + r[k]["as_is"][2], 1) for r in rows]
        meds = [r[k]["median"] for r in rows]
        summary[k] = {**_summary([{"a": r[k]["gt"]} for r in rows], "a"),
                      "dice_vs_as_is_min": min(agree), "dice_vs_as_is_median": float(np.median(agree)),
                      "median_low": min(meds), "median_high": max(meds), "warned": sum(r[k]["warned"] for r in rows)}
    out = {"machine": platform.processor() or platform.machine(), "seconds": time.time() - t0,
           "dark_median": F.DARK_MEDIAN, "split": _dark_split(rows),
           "idrid_retina_median": {"photos": len(medians), "lowest": min(medians),
                                   "p5": float(np.percentile(medians, 5)), "median": float(np.median(medians)),
                                   "warned": sum(m < F.DARK_MEDIAN for m in medians)},
           "summary": summary, "rows": rows}
    print(f"\n{'darkened':<10}{'retina median':>15}{'warned':>8}{'pooled Dice':>13}{'mean Dice':>10}"
          f"{'vs as is: min':>15}{'median':>8}")
    for f in DARKEN:
        s = summary[str(f)]
        print(f"{'1/' + str(f):<10}{s['median_low']:>7.0f} - {s['median_high']:<5.0f}{s['warned']:>5}/{s['n']:<2}"
              f"{s['pooled_dice']:>13.3f}{s['mean_dice']:>10.3f}{s['dice_vs_as_is_min']:>15.3f}"
              f"{s['dice_vs_as_is_median']:>8.3f}")
    sp = out["split"]
    print(f"chosen on every second photo ({sp['chosen_on']}): {sp['level']} (the lowest warning of every collapse, "
          f"Dice under 0.5 against the photo as it is); on the other {sp['reported_on']}: "
          f"{sp['collapsed_warned']} of {sp['collapsed']} collapses warned, {sp['warned']} of {sp['copies']} copies "
          f"warned, the unwarned pooled Dice {sp['unwarned_pooled_dice']:.3f} (as they are: {sp['as_is_pooled_dice']:.3f})")
    i = out["idrid_retina_median"]
    print(f"IDRiD's {i['photos']} photos as they are: retina median lowest {i['lowest']:.0f}, 5 % below "
          f"{i['p5']:.0f}, median {i['median']:.0f}; warned (below {F.DARK_MEDIAN}): {i['warned']}")
    return out


def main() -> None:
    from napari_lesionseg.core import fov as fov_module
    from napari_lesionseg.core import preprocess
    from napari_lesionseg.core.bundled import resolve_model
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--gray", action="store_true", help="also whole photos against their gray copies")
    ap.add_argument("--limit", type=int, default=0, help="the first N annotated photos only")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "photo_forms.json")
    ap.add_argument("--surround", action="store_true", help="no model: the lit share outside fitted circles")
    ap.add_argument("--dark", action="store_true",
                    help="the annotated photos darkened (an underexposed capture): Dice and the dark-photo warning")
    ap.add_argument("--banners", action="store_true",
                    help="the annotated photos with a camera's panel or text in the surround, field of view found now "
                         "and as before 2026-12-05 evening (the whole image)")
    args = ap.parse_args()
    if not (DATA / "masks_HE").is_dir():
        raise SystemExit(f"{DATA}: IDRiD's training set not found (see ../shared/data/MANIFEST.md)")
    if args.surround:
        out = surround()
        dest = args.out.with_name("photo_forms_surround.json") if args.out.name == "photo_forms.json" else args.out
        dest.write_text(json_text(out, indent=2))
        print(f"wrote {dest}")
        return
    model = load_model_folder(resolve_model(args.model), "cpu")
    if args.banners or args.dark:
        out = banners(model, args.limit) if args.banners else dark(model, args.limit)
        suffix = "banners" if args.banners else "dark"
        dest = args.out.with_name(f"photo_forms_{suffix}.json") if args.out.name == "photo_forms.json" else args.out
        dest.write_text(json_text(out, indent=2))
        print(f"wrote {dest}")
        return

    def before(rgb: np.ndarray):  # the detector without its dark-outside rule
        kept, fov_module.MAX_LIT_OUTSIDE = fov_module.MAX_LIT_OUTSIDE, float("inf")
        try:
            return fov_module.detect_fov(rgb)
        finally:
            fov_module.MAX_LIT_OUTSIDE = kept

    def mask(rgb: np.ndarray, fov=None) -> np.ndarray:
        return run_to_end(predict(model, rgb, fov=fov)).mask > 0

    crops: list[dict] = []
    gray: list[dict] = []
    t0 = time.time()
    for photo, rgb, gt in _annotated(args.limit):
        fov = fov_module.detect_fov(rgb)
        whole = mask(rgb)  # the whole photo's mask: what the crops' regions get in a full photo
        h, w = gt.shape
        for frac, left in CROPS:
            ch, cw = int(h * frac), int(w * frac)
            y0, x0 = max(0, int(fov.cy - ch / 2)), max(0, int(fov.cx - cw * left))
            crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])
            g = gt[y0:y0 + ch, x0:x0 + cw]
            old, new = before(crop), fov_module.detect_fov(crop)
            if old == new:
                continue
            crops.append({"photo": photo.stem, "crop": [frac, left], "old_radius_share": old.radius / max(crop.shape[:2]),
                          "before": _counts(mask(crop, old), g), "now": _counts(mask(crop, new), g),
                          "whole_photo": _counts(whole[y0:y0 + ch, x0:x0 + cw], g)})
        if args.gray:
            g3 = np.repeat(rgb[..., 1:2], 3, axis=2)
            kept, preprocess.is_gray = preprocess.is_gray, lambda _px: False  # the gray copied into red, as before
            try:
                replicated = _counts(mask(g3), gt)
            finally:
                preprocess.is_gray = kept
            gray.append({"photo": photo.stem, "colour": _counts(whole, gt), "gray": _counts(mask(g3), gt),
                         "gray_red_copied": replicated, "chosen_on": len(gray) % 2 == 1})
        print(f"{photo.stem}: {len(crops)} crops scored", flush=True)
    out = {"model": args.model, "machine": platform.processor() or platform.machine(), "seconds": time.time() - t0,
           "crops": {"before": _summary(crops, "before"), "now": _summary(crops, "now"),
                     "whole_photo": _summary(crops, "whole_photo"), "rows": crops}}
    if gray:
        held = [r for r in gray if not r["chosen_on"]]
        out["gray"] = {"colour": _summary(gray, "colour"), "gray": _summary(gray, "gray"),
                       "gray_red_copied": _summary(gray, "gray_red_copied"),
                       "not_chosen_on": {a: _summary(held, a) for a in ("colour", "gray", "gray_red_copied")}, "rows": gray}
    print(f"\n{'photos':<34}{'n':>5}{'pooled Dice':>13}{'recall':>8}{'precision':>10}{'mean Dice':>10}")
    table = [("crops, field of view before", out["crops"]["before"]), ("crops, field of view now", out["crops"]["now"]),
             ("crops' regions in the whole photo", out["crops"]["whole_photo"])]
    if gray:
        g, h = out["gray"], out["gray"]["not_chosen_on"]
        table += [("whole photos, colour", g["colour"]), ("whole photos, gray copy", g["gray"]),
                  ("  gray, as fed before (red = gray)", g["gray_red_copied"]), ("27 photos not chosen on, colour", h["colour"]),
                  ("  gray copy", h["gray"]), ("  gray, as fed before", h["gray_red_copied"])]
    for name, s in table:
        print(f"{name:<34}{s['n']:>5}{s['pooled_dice']:>13.3f}{s['recall']:>8.3f}{s['precision']:>10.3f}{s['mean_dice']:>10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
