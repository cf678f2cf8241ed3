"""Fit what the fuzzy map and the review queue read (``inference.fuzzy.error_rate``,
``inference.review``) from a model's own mistakes on annotated photos.

- **Pixel error rate** (DALE's ER, its expectation given the prediction): the share of pixels
  at each calibrated probability where the thresholded mask disagrees with the annotation;
  the fuzzy map reads it off at each pixel's probability (``map = "error_rate"``).
- **Review rates**: a candidate miss (a region where the probability exceeds the review floor
  that holds no mask pixel, ``core.review.candidate_misses``) overlapped an annotated lesion in this share of cases, by the region's
  highest probability (kept non-decreasing); a predicted lesion overlapped none in this share,
  by its highest probability (kept non-increasing).

Counted on the working grid, one forward pass per photo without TTA, on the photos given:
the training photos (the validation photos report the score and chose the checkpoint; they
must not also fit what is scored). ``python -m lesionseg_training.fit_review --model M --images DIR
[--exclude-ids ...] --out NEW``; the trainer runs :func:`fit_review` on its training photos
after calibration.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_lesionseg.core.inference import apply_calibration
from napari_lesionseg.core.model_config import ModelConfig
from napari_lesionseg.core.review import candidate_misses

from .data import Prepared
from .oof_predictions import Predicted, check_kept, predict

EIGHT = np.ones((3, 3), bool)
PIXEL_EDGES = np.unique(np.concatenate([[0.0, 1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.035],
                                        np.linspace(0.05, 1.0, 39)]))


def _smoothed_rate(hits: np.ndarray, counts: np.ndarray, prior: float, strength: float) -> np.ndarray:
    return (hits + strength * prior) / (counts + strength)


def _isotonic(y: np.ndarray, w: np.ndarray, increasing: bool) -> np.ndarray:
    """Weighted pool-adjacent-violators: the closest monotone sequence to ``y``."""
    vals = list(y if increasing else -y)
    ws = list(w.astype(float))
    blocks: list[list[float]] = []  # [value, weight, count]
    for v, wt in zip(vals, ws):
        blocks.append([v, wt, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            tot = max(w1 + w2, 1e-12)
            blocks.append([(v1 * w1 + v2 * w2) / tot, w1 + w2, n1 + n2])
    out = np.concatenate([[b[0]] * int(b[2]) for b in blocks])
    return out if increasing else -out


def _knots(x_sum: np.ndarray, counts: np.ndarray, rate: np.ndarray, lo: float, hi: float) -> list[list[float]]:
    """Knots at each non-empty bin's mean x, flat beyond the first and last (x strictly increasing)."""
    keep = counts > 0
    xs = x_sum[keep] / counts[keep]
    ys = rate[keep]
    xs_out, ys_out = [lo], [float(ys[0])]
    for x, y in zip(xs, ys):
        if x > xs_out[-1] + 1e-9:
            xs_out.append(float(x))
            ys_out.append(float(y))
    if hi > xs_out[-1] + 1e-9:
        xs_out.append(hi)
        ys_out.append(float(ys[-1]))
    return [xs_out, [float(np.clip(v, 0.0, 1.0)) for v in ys_out]]


class _Tally:
    """Counts per bin: how many, how many hits, and the sum of x (for the knot positions)."""

    def __init__(self, edges: np.ndarray) -> None:
        self.edges = edges
        n = len(edges) - 1
        self.count, self.hits, self.xsum = np.zeros(n), np.zeros(n), np.zeros(n)

    def add(self, x: np.ndarray, hit: np.ndarray) -> None:
        b = np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, len(self.count) - 1)
        n = len(self.count)
        self.count += np.bincount(b, minlength=n)
        self.hits += np.bincount(b, weights=hit.astype(float), minlength=n)
        self.xsum += np.bincount(b, weights=x, minlength=n)


def _component_max(prob: np.ndarray, region: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 8-connected component of ``region``: its highest probability and whether it touches ``truth``."""
    lab, n = ndi.label(region, EIGHT)
    if n == 0:
        return np.zeros(0), np.zeros(0, bool)
    pmax = ndi.maximum(prob, lab, np.arange(1, n + 1))
    touched = np.zeros(n + 1, bool)
    touched[np.unique(lab[truth & region])] = True
    return np.asarray(pmax, float), touched[1:]


def fit_review(net: torch.nn.Module, config: ModelConfig, items: Iterable[Prepared]
               ) -> tuple[ModelConfig, dict[str, float]]:
    """The config with ``inference.fuzzy`` (``map = "error_rate"`` and its knots) and
    ``inference.review`` (floor and rates) fitted on ``items``; and what was counted."""
    return fit_review_pooled(config, predict(net, config, items))


def fit_review_pooled(config: ModelConfig, predicted: Iterable[Predicted]) -> tuple[ModelConfig, dict[str, float]]:
    """:func:`fit_review` counted over photos already predicted (out of fold: every fold
    model's mistakes on the photos it never trained on, the rates a final model of the same
    recipe makes on new photos; ``predict_groups``, or read back from stored predictions), all
    read through ``config``'s calibration and threshold."""
    inf = config.inference
    thr = inf.threshold
    floor = inf.review.floor_for(thr)
    pixels = _Tally(PIXEL_EDGES)
    cand = _Tally(np.geomspace(floor, thr, 9))
    # bins of a lesion's highest probability: 7 up to 0.9, then finer to 1 (a threshold above
    # 0.9 keeps only the fine ones)
    top = [e for e in (0.9, 0.95, 0.99) if e > thr] + [1.0 + 1e-9]
    les = _Tally(np.concatenate([np.linspace(thr, 0.9, 8)[:-1] if thr < 0.9 else [thr], top]))
    n_images = 0
    for pred in predicted:
        check_kept(pred, floor, inf.calibration)
        n_images += 1
        p = apply_calibration(pred.probs[0], inf.calibration)
        y, fov = pred.labels[0], pred.fov
        valid = fov & (y != 255)
        gt = (y == 1) & valid
        mask = (p > thr) & fov
        pixels.add(p[valid].astype(float), (mask != gt)[valid])
        pm, touched = _component_max(p, candidate_misses(p, mask, floor) & fov, gt)
        cand.add(pm, touched)
        pm, touched = _component_max(p, mask, gt)
        les.add(pm, ~touched)
    if n_images == 0 or pixels.count.sum() == 0:
        raise ValueError("fit_review needs at least one annotated photo")
    prior = pixels.hits.sum() / pixels.count.sum()
    px_rate = _smoothed_rate(pixels.hits, pixels.count, prior, 50.0)
    # a network with a fuzzy head keeps showing it (the knots are kept beside it, for comparison)
    fuzzy = replace(inf.fuzzy, map="head" if config.network.error_head else "error_rate",
                    error_rate=_knots(pixels.xsum, pixels.count, px_rate, 0.0, 1.0))
    review = inf.review
    figures = {"fit_images": float(n_images), "fit_pixel_error_share": float(prior),
               "fit_candidates": float(cand.count.sum()), "fit_lesions": float(les.count.sum())}
    if cand.count.sum() > 0 and les.count.sum() > 0:
        c_prior = cand.hits.sum() / cand.count.sum()
        l_prior = les.hits.sum() / les.count.sum()
        c_rate = _isotonic(_smoothed_rate(cand.hits, cand.count, c_prior, 5.0), cand.count, increasing=True)
        l_rate = _isotonic(_smoothed_rate(les.hits, les.count, l_prior, 5.0), les.count, increasing=False)
        review = replace(review, missed_rate=_knots(cand.xsum, cand.count, c_rate, floor, thr),
                         false_alarm_rate=_knots(les.xsum, les.count, l_rate, thr, 1.0))
        figures.update({"fit_candidate_hit_share": float(c_prior), "fit_false_alarm_share": float(l_prior)})
    return replace(config, inference=replace(inf, fuzzy=fuzzy, review=review)), figures


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.fit_review", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", required=True, help="IDRiD-layout root, or an images folder (with --masks)")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--exclude-ids", nargs="*", default=None,
                    help="photos not to count (default: the model's validation photos from metrics.json)")
    ap.add_argument("--cache", type=Path, default=None, help="prepared-data cache folder")
    ap.add_argument("--out", type=Path, required=True, help="where to write the model folder (may be --model)")
    return run_command(_fit, ap.parse_args(argv))


def _fit(args: argparse.Namespace) -> int:
    from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder

    from .data import find_pairs, prepare_pair
    from .train_config import DataConfig

    model = load_model_folder(args.model)
    exclude = args.exclude_ids if args.exclude_ids is not None else list(model.metrics.get("val_images", []))
    pairs = [p for p in find_pairs(DataConfig(images=args.images, masks=args.masks)) if p.id not in set(exclude)]
    items = (prepare_pair(p, model.config.preprocess, args.cache) for p in pairs)
    cfg, figures = fit_review(model.net, model.config, items)
    metrics = {**model.metrics, "review_fit": {**figures, "excluded": exclude}}
    save_model_folder(args.out, model.net, cfg, metrics, model.lineage, overwrite=args.out.resolve() == args.model.resolve())
    print(f"fitted on {int(figures['fit_images'])} photos ({len(exclude)} excluded) -> {args.out}")
    for k, v in figures.items():
        print(f"  {k:28s} {v:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
