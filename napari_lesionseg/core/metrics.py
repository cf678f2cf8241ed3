"""Segmentation metrics (METHODS.md 5): overlap scores per image and per dataset, HD95, and
pooled-pixel AUPR as the IDRiD challenge scores it.

Masks are boolean ``(H, W)`` arrays; an optional ``valid`` mask (label 255 = ignore) removes
pixels from every count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

EmptyConvention = Literal["one", "exclude"]


@dataclass
class Counts:
    """Pixel confusion counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def confusion(pred: NDArray, gt: NDArray, valid: NDArray | None = None) -> Counts:
    """Counts of ``pred`` against ``gt`` (both boolean-like, same shape)."""
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth {g.shape}")
    if valid is not None:
        v = np.asarray(valid, bool)
        p, g = p[v], g[v]
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    return Counts(tp, fp, fn, int(p.size) - tp - fp - fn)


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def scores(c: Counts) -> dict[str, float]:
    """Dice, IoU, precision, recall, accuracy; a 0/0 is 1 when prediction and truth are both
    empty, else 0."""
    empty = c.tp + c.fp + c.fn == 0
    return {
        "dice": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, empty),
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn, empty),
        "precision": _ratio(c.tp, c.tp + c.fp, empty),
        "recall": _ratio(c.tp, c.tp + c.fn, empty),
        "accuracy": _ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn, True),
    }


def _boundary(a: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return a & ~ndimage.binary_erosion(a, structure=np.ones((3, 3), bool), border_value=0)


def hd95(pred: NDArray, gt: NDArray, convention: Literal["medpy", "max_directed"] = "medpy",
         spacing: float | tuple[float, float] = 1.0) -> float:
    """95th-percentile Hausdorff distance between the boundaries of two non-empty masks.

    ``medpy``: percentile of the union of both directed distance sets; ``max_directed``
    (MONAI): the larger of the two directed 95th percentiles. NaN when either mask is empty.
    """
    a = np.asarray(pred, bool)
    b = np.asarray(gt, bool)
    if not a.any() or not b.any():
        return float("nan")
    ba, bb = _boundary(a), _boundary(b)
    dt_b = ndimage.distance_transform_edt(~bb, sampling=spacing)
    dt_a = ndimage.distance_transform_edt(~ba, sampling=spacing)
    d_ab = dt_b[ba]
    d_ba = dt_a[bb]
    if convention == "medpy":
        return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


class PooledPR:
    """Precision-recall over all pixels of many images, accumulated in probability bins.

    ``bins`` equal-width bins over [0, 1]; 256 reproduces an 8-bit probability PNG exactly.
    ``aupr()`` is the average precision (step-wise area, as scikit-learn computes it) of the
    curve that sweeps the threshold down through the bins.
    """

    def __init__(self, bins: int = 65536) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def add(self, prob: NDArray, gt: NDArray, valid: NDArray | None = None) -> None:
        p = np.asarray(prob, np.float64)
        g = np.asarray(gt, bool)
        if valid is not None:
            v = np.asarray(valid, bool)
            p, g = p[v], g[v]
        idx = np.clip((p * self.bins).astype(np.int64), 0, self.bins - 1).ravel()
        g = g.ravel()
        self.pos += np.bincount(idx[g], minlength=self.bins)
        self.neg += np.bincount(idx[~g], minlength=self.bins)

    def curve(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(precision, recall, threshold)`` from the highest threshold down (non-empty bins)."""
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        keep = (self.pos[::-1] + self.neg[::-1]) > 0
        tp, fp = tp[keep], fp[keep]
        thr = (np.arange(self.bins)[::-1] / self.bins)[keep]
        total = self.pos.sum()
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / total if total else np.zeros_like(tp, dtype=np.float64)
        return precision, recall, thr

    def aupr(self) -> float:
        if self.pos.sum() == 0:
            return float("nan")
        precision, recall, _ = self.curve()
        r_prev = np.concatenate([[0.0], recall[:-1]])
        return float(np.sum((recall - r_prev) * precision))


@dataclass
class DatasetScores:
    """Accumulates per-image and dataset-level scores over many images."""

    threshold: float = 0.5
    empty: EmptyConvention = "one"
    hd95_convention: Literal["medpy", "max_directed"] = "medpy"
    pr_bins: int = 65536
    per_image: list[dict[str, float | str]] = field(default_factory=list)
    total: Counts = field(default_factory=Counts)
    pr: PooledPR | None = None

    def add(self, name: str, prob: NDArray, gt: NDArray, valid: NDArray | None = None,
            with_hd95: bool = True, mask: NDArray | None = None) -> dict[str, float | str]:
        """Score one image: ``prob`` float in [0, 1], ``gt`` boolean, same shape. ``mask``: the
        prediction's own mask where it is not ``prob > threshold`` (the optic disc's keeps one
        region), so the overlap scores are those of the mask written; AUPR is ``prob``'s."""
        if self.pr is None:
            self.pr = PooledPR(self.pr_bins)
        pred = np.asarray(prob) > self.threshold if mask is None else np.asarray(mask).astype(bool)
        c = confusion(pred, gt, valid)
        self.total = self.total + c
        self.pr.add(prob, gt, valid)
        row: dict[str, float | str] = {"image": name, **scores(c), "gt_pixels": c.tp + c.fn,
                                       "pred_pixels": c.tp + c.fp}
        if with_hd95:
            g = np.asarray(gt, bool) if valid is None else np.asarray(gt, bool) & np.asarray(valid, bool)
            p = pred if valid is None else pred & np.asarray(valid, bool)
            row["hd95"] = hd95(p, g, self.hd95_convention)
        self.per_image.append(row)
        return row

    def summary(self) -> dict[str, float]:
        """``<metric>_img`` (mean over images), ``<metric>_ds`` (pooled counts), hd95, aupr."""
        out: dict[str, float] = {"images": float(len(self.per_image))}
        rows = self.per_image
        if self.empty == "exclude":
            rows = [r for r in rows if float(r["gt_pixels"]) > 0]
        out["empty_gt_images"] = float(sum(1 for r in self.per_image if float(r["gt_pixels"]) == 0))
        for k in ("dice", "iou", "precision", "recall", "accuracy"):
            out[f"{k}_img"] = float(np.mean([float(r[k]) for r in rows])) if rows else float("nan")
        for k, v in scores(self.total).items():
            out[f"{k}_ds"] = v
        hds = [float(r["hd95"]) for r in self.per_image if "hd95" in r and np.isfinite(float(r["hd95"]))]
        out["hd95"] = float(np.mean(hds)) if hds else float("nan")
        out["hd95_one_empty"] = float(sum(1 for r in self.per_image if "hd95" in r
                                          and not np.isfinite(float(r["hd95"]))
                                          and (float(r["gt_pixels"]) > 0) != (float(r["pred_pixels"]) > 0)))
        out["aupr"] = self.pr.aupr() if self.pr is not None else float("nan")
        return out

    def state(self) -> dict[str, Any]:
        """What pooling over runs needs, JSON-ready: the threshold, the PR histogram's occupied
        bins, the pooled counts and the per-image rows (:meth:`from_state`, :func:`pool_scores`)."""
        pr = self.pr or PooledPR(self.pr_bins)
        occupied = np.flatnonzero(pr.pos + pr.neg)
        return {"threshold": self.threshold, "empty": self.empty, "pr_bins": pr.bins,
                "pr": [[int(i), int(pr.pos[i]), int(pr.neg[i])] for i in occupied],
                "total": asdict(self.total), "per_image": self.per_image}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DatasetScores:
        ds = cls(threshold=float(state["threshold"]), empty=state["empty"], pr_bins=int(state["pr_bins"]),
                 per_image=list(state["per_image"]), total=Counts(**state["total"]))
        ds.pr = PooledPR(ds.pr_bins)
        for i, pos, neg in state["pr"]:
            ds.pr.pos[i], ds.pr.neg[i] = pos, neg
        return ds


def pool_scores(parts: list[DatasetScores]) -> DatasetScores:
    """One score over the images of several runs (e.g. the folds of a cross-validation, each
    scoring its own photos with its own model and threshold): pixels pooled into one
    precision-recall curve, counts summed, per-image rows joined. ``threshold`` is NaN when the
    parts' thresholds differ."""
    if not parts:
        raise ValueError("nothing to pool")
    bins = {p.pr_bins for p in parts}
    if len(bins) != 1:
        raise ValueError(f"cannot pool precision-recall histograms of different bin counts: {sorted(bins)}")
    thresholds = {p.threshold for p in parts}
    out = DatasetScores(threshold=thresholds.pop() if len(thresholds) == 1 else float("nan"),
                        empty=parts[0].empty, pr_bins=parts[0].pr_bins)
    out.pr = PooledPR(out.pr_bins)
    for p in parts:
        out.total = out.total + p.total
        out.per_image += p.per_image
        if p.pr is not None:
            out.pr.pos += p.pr.pos
            out.pr.neg += p.pr.neg
    return out


@dataclass
class LesionCounts:
    """Lesion-level detection over photos: an annotated lesion (8-connected component) is
    found when any predicted pixel touches it; a predicted lesion is right when it touches
    any annotated pixel. Pixels marked unsure (``valid`` False) belong to neither."""

    gt: int = 0
    gt_found: int = 0
    pred: int = 0
    pred_right: int = 0

    def add(self, pred: NDArray, gt: NDArray, valid: NDArray | None = None) -> dict[str, float]:
        """Count one photo; returns its lesion-level precision and recall."""
        p = np.asarray(pred, bool)
        g = np.asarray(gt, bool)
        if valid is not None:
            p = p & valid
            g = g & valid
        both = p & g
        n_gt, n_pred = _count_touching(g, both), _count_touching(p, both)
        self.gt += n_gt[0]
        self.gt_found += n_gt[1]
        self.pred += n_pred[0]
        self.pred_right += n_pred[1]
        return {"lesion_recall": _ratio(n_gt[1], n_gt[0], True), "lesion_precision": _ratio(n_pred[1], n_pred[0], True),
                "gt_lesions": float(n_gt[0]), "pred_lesions": float(n_pred[0])}

    def summary(self) -> dict[str, float]:
        return {"lesion_recall": _ratio(self.gt_found, self.gt, True),
                "lesion_precision": _ratio(self.pred_right, self.pred, True),
                "gt_lesions": float(self.gt), "pred_lesions": float(self.pred)}


def _count_touching(mask: NDArray[np.bool_], touch: NDArray[np.bool_]) -> tuple[int, int]:
    """``(components of mask, those with a pixel in touch)``."""
    from .lesions import label_runs

    lab, n, _, _ = label_runs(mask)
    if n == 0:
        return 0, 0
    hit = np.unique(lab[touch])
    return n, int(np.count_nonzero(hit))
