"""Benchmark: where a several-output model's lesion masks overlap, which type should the
plugin's one-value-per-pixel label map show? For each photo, the pixels that two or more of
the model's lesion masks claim, scored against IDRiD's annotations under three rules:
hemorrhages on top (the old fixed paint order), microaneurysms on top (else the highest
probability), and the type with the
highest probability (``segment_layers.composite_mask``). Also how much the annotations
themselves overlap. Prints a table and writes results/type_overlap.json.

    python benchmarks/type_overlap.py [--model multi] [--ids 04,10,...] [--data DIR]

The default photos are the ``multi`` model's 9 validation photos: they chose its checkpoint
and thresholds. The rule is chosen on the ``--choose`` photos (the first five) and its share
reported on the others (``check``), so no photo both picks and reports it. With
``--annotations`` it also counts, over every photo in ``--data``, how often the annotators
gave a pixel two types (masks only, no model).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
VALIDATION = "04,10,16,22,28,34,40,47,53"


def annotated(data: Path, iid: str, t: str, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    p = data / f"masks_{t}" / f"{iid}_{t}.tif"
    if not p.exists():
        return np.zeros(shape, bool)
    a = np.asarray(Image.open(p))
    return (a[..., 0] if a.ndim == 3 else a) > 0


def right(choice: np.ndarray, truth: dict[str, np.ndarray], where: np.ndarray) -> int:
    """How many overlapping pixels get a type the annotation has there."""
    return int(sum(((choice == t) & m[where]).sum() for t, m in truth.items()))


def annotation_overlap(data: Path, types: list[str]) -> dict[str, dict[str, float]]:
    """Over every photo in ``data/images``: each type's annotated pixels, and how many of them
    another type's annotation has too."""
    from PIL import Image

    px = dict.fromkeys(types, 0)
    shared = dict.fromkeys(types, 0)
    for image in sorted((data / "images").glob("*.jpg")):
        shape = Image.open(image).size[::-1]
        masks = {t: annotated(data, image.stem, t, shape) for t in types}
        count = sum(m.view(np.uint8) for m in masks.values())
        for t, m in masks.items():
            px[t] += int(m.sum())
            shared[t] += int((m & (count > 1)).sum())
    return {t: {"px": px[t], "also_another_type": shared[t], "overlap_share": shared[t] / max(px[t], 1)}
            for t in types}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="multi")
    ap.add_argument("--ids", default=VALIDATION)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--choose", default="04,10,16,22,28", help="the photos that choose the rule")
    ap.add_argument("--annotations", action="store_true", help="also the annotations' own overlap, all photos")
    ap.add_argument("--out", default=str(HERE / "results" / "type_overlap.json"))
    args = ap.parse_args()

    import torch

    from napari_lesionseg.core.bundled import resolve_model
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.lesion_types import HE, LESION_TYPES
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.segment_layers import PAINT_ORDER

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = load_model_folder(resolve_model(args.model))
    data = Path(args.data)
    rows = []
    for n in args.ids.split(","):
        iid = f"IDRiD_{n}"
        rgb, _ = read_image(data / "images" / f"{iid}.jpg")
        pred = run_to_end(predict(model, rgb))
        masks = {HE: pred.mask > 0, **{t: m.mask > 0 for t, m in pred.others.items() if t in LESION_TYPES}}
        probs = {HE: pred.probability, **{t: m.probability for t, m in pred.others.items() if t in LESION_TYPES}}
        truth = {t: annotated(data, iid, t, pred.mask.shape) for t in masks}
        count = sum(m.view(np.uint8) for m in masks.values())
        where = count > 1
        types = list(masks)
        # the type each rule gives an overlapping pixel, and whether the annotation has it
        score = np.stack([np.where(masks[t][where], probs[t][where], -1.0) for t in types])
        by_p = np.array(types)[np.argmax(score, axis=0)]

        paint = np.full(by_p.shape, "", object)  # the old fixed order: the last of PAINT_ORDER present
        for t in PAINT_ORDER:
            if t in masks:
                paint[masks[t][where]] = t
        claimed = {t: masks[t] & where for t in types}
        row = {"image": iid, "overlap_px": int(where.sum()),
               "pred_px": {t: int(m.sum()) for t, m in masks.items()},
               "pred_overlap_px": {t: int(c.sum()) for t, c in claimed.items()},
               "annotated_px": {t: int(m.sum()) for t, m in truth.items()},
               "annotated_overlap_px": {t: int((truth[t] & (sum(truth[u].view(np.uint8) for u in types) > 1)).sum())
                                        for t in types},
               "annotated_none": int((~np.any(np.stack([truth[t][where] for t in types]), axis=0)).sum()),
               "right": {"paint order (HE on top)": right(paint, truth, where),
                         "MA, else highest p": right(np.where(masks.get("MA", np.zeros_like(where))[where], "MA", by_p),
                                                     truth, where),
                         "highest probability": right(by_p, truth, where)}}
        rows.append(row)
        print(f"{iid}: {row['overlap_px']} px overlap; right: {row['right']}", flush=True)

    def total(key: str, sub: str | None = None, among: list[dict] = rows) -> int:
        return sum(r[key][sub] if sub else r[key] for r in among)

    n = total("overlap_px")
    rules = list(rows[0]["right"])
    choose_ids = {f"IDRiD_{i}" for i in args.choose.split(",")}
    split = {"choose": [r for r in rows if r["image"] in choose_ids],
             "check": [r for r in rows if r["image"] not in choose_ids]}
    shares = {name: {rule: total("right", rule, part) / max(total("overlap_px", among=part), 1) for rule in rules}
              for name, part in split.items() if part}
    chosen = max(rules, key=lambda rule: shares["choose"][rule]) if "choose" in shares else None
    print(f"\n{'rule':26s} {'all':>7s} {'choose':>7s} {'check':>7s}   ({n} overlapping px on {len(rows)} photos, "
          f"{total('annotated_none')} annotated as no lesion; share given the annotated type)")
    for rule in rules:
        cells = [f"{shares[k][rule]:7.3f}" if k in shares else f"{'-':>7s}" for k in ("choose", "check")]
        print(f"{rule:26s} {total('right', rule) / max(n, 1):7.3f} {' '.join(cells)}"
              f"{'   <- chosen' if rule == chosen else ''}")
    print(f"\n{'type':5s} {'pred px':>9s} {'overlap':>8s} {'share':>7s} {'annotated':>10s} {'overlap':>8s}")
    summary = {}
    for t in rows[0]["pred_px"]:
        p, po = total("pred_px", t), total("pred_overlap_px", t)
        a, ao = total("annotated_px", t), total("annotated_overlap_px", t)
        summary[t] = {"pred_px": p, "pred_overlap_share": po / max(p, 1), "annotated_px": a,
                      "annotated_overlap_share": ao / max(a, 1)}
        print(f"{t:5s} {p:9d} {po:8d} {po / max(p, 1):7.3f} {a:10d} {ao:8d}")
    out = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
           "model": args.model, "photos": [r["image"] for r in rows], "overlap_px": n,
           "right": {rule: total("right", rule) for rule in rules}, "shares": shares, "chosen": chosen,
           "choose": sorted(choose_ids), "types": summary, "rows": rows}
    if args.annotations:
        out["annotations"] = annotation_overlap(data, list(summary))
        print("\nannotations, all photos: share of each type's pixels that another type has too: "
              + ", ".join(f"{t} {v['overlap_share']:.4%}" for t, v in out["annotations"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json_text(out, indent=1))


if __name__ == "__main__":
    main()
