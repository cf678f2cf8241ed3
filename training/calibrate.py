"""Probability calibration (Platt scaling) fitted on validation pixels.

A network trained with a positive class weight is over-confident: many pixels sit within
1/510 of 1.0 and tie at 255 in the 8-bit probability PNG, which destroys the ranking a pooled
precision-recall curve needs. ``q = sigmoid(a * logit(p) + b)`` fitted by log-likelihood on
validation pixels is monotone (the ranking is kept), gives better-calibrated probabilities,
and spreads the top of the scale again. It is stored in the model's config as piecewise-linear
knots (logit-spaced), with the threshold that maximises validation Dice on the calibrated
scale."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from napari_lesionseg.core.inference import apply_calibration
from napari_lesionseg.core.lesion_types import HE
from napari_lesionseg.core.metrics import PooledPR
from napari_lesionseg.core.model_config import ModelConfig

from .data import Prepared
from .oof_predictions import LOGIT_BINS, Predicted, logit, logit_bins, predict


def platt_fit(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimising the negative log-likelihood of ``y`` under ``sigmoid(a logit(p) + b)``,
    over every pixel: lesion and background pixels counted in 4096 logit bins over [-16, 16]
    (width 0.008; the fit is the same wherever and in whatever order the pixels come, as read
    back from stored predictions; a random subsample of 400,000 pixels, as before 2026-12-02,
    moved the intercept by up to 0.07 between two orders of the same pixels)."""
    z = logit(p).ravel()
    t = np.asarray(y, bool).ravel()
    bins = logit_bins(z)
    pos = np.bincount(bins[t], minlength=LOGIT_BINS).astype(np.float64)
    neg = np.bincount(bins[~t], minlength=LOGIT_BINS).astype(np.float64)
    sums = np.bincount(bins, weights=z, minlength=LOGIT_BINS)
    keep = (pos + neg) > 0
    zc = sums[keep] / (pos + neg)[keep]  # each bin at its pixels' mean logit
    pos, neg = pos[keep], neg[keep]
    n = pos.sum() + neg.sum()

    def nll(ab: np.ndarray) -> float:
        s = ab[0] * zc + ab[1]
        return float(((pos + neg) * np.logaddexp(0.0, s) - pos * s).sum() / n)

    a, b = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7}).x
    return float(a), float(b)


def platt_knots(a: float, b: float, n: int = 513) -> list[list[float]]:
    """Knots of ``p -> sigmoid(a logit(p) + b)``, logit-spaced so the tails are resolved."""
    x = 1 / (1 + np.exp(-np.linspace(-16, 16, n)))
    y = 1 / (1 + np.exp(-np.clip(a * logit(x) + b, -700.0, 700.0)))
    return [[0.0, *x.tolist(), 1.0], [0.0, *y.tolist(), 1.0]]


def apply_knots(p: np.ndarray, knots: list[list[float]]) -> np.ndarray:
    """The mapping inference applies (``core.inference.apply_calibration``)."""
    return apply_calibration(p, knots)


def calibrate(net, config: ModelConfig, items: Iterable[Prepared]) -> tuple[ModelConfig, dict[str, float]]:
    """Fit the calibration on ``items`` (validation, working grid); return the config with
    calibration knots and the Dice-optimal threshold on the calibrated scale, and figures;
    for every output of the model (other outputs' figures end in ``_<T>``; an output no item
    has labels for keeps its settings)."""
    return calibrate_pooled(config, predict(net, config, items))


def calibrate_pooled(config: ModelConfig, predicted: Iterable[Predicted]) -> tuple[ModelConfig, dict[str, float]]:
    """:func:`calibrate` on pooled pixels of photos already predicted: out-of-fold calibration
    pools every fold model's predictions on the photos it never trained on (``predict_groups``,
    or read back from stored predictions), fitted once for the final model that shares their
    recipe."""
    outputs = config.network.outputs
    probs: list[list[np.ndarray]] = [[] for _ in outputs]
    labels: list[list[np.ndarray]] = [[] for _ in outputs]
    for pred in predicted:
        for k in range(len(outputs)):
            v = pred.fov & (pred.labels[k] != 255)
            probs[k].append(pred.probs[k][v])
            labels[k].append((pred.labels[k] == 1)[v])
    figures: dict[str, float] = {}
    inference = config.inference
    for k, name in enumerate(outputs):
        if not probs[k]:
            continue
        p = np.concatenate(probs[k]).astype(np.float64)
        y = np.concatenate(labels[k])
        if not y.any():
            continue
        knots, threshold, figs = _fit_one(p, y)
        inference = inference.with_type(name, threshold, knots)
        sfx = "" if name == HE else f"_{name}"
        figures.update({f"{key}{sfx}": v for key, v in figs.items()})
    return replace(config, inference=inference), figures


def _fit_one(p: np.ndarray, y: np.ndarray) -> tuple[list[list[float]], float, dict[str, float]]:
    """One output's Platt knots, Dice-optimal threshold on the calibrated scale, figures."""
    a, b = platt_fit(p, y)
    knots = platt_knots(a, b)
    q = apply_knots(p, knots)
    figures = {"platt_a": a, "platt_b": b}
    for name, arr in (("raw", p), ("calibrated", q)):
        for bins in (256, 65536):
            pr = PooledPR(bins)
            pr.add(arr, y)
            figures[f"val_aupr_{name}_{bins}bins"] = pr.aupr()
    pr = PooledPR(4096)
    pr.add(q, y)
    precision, recall, thr = pr.curve()
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    k = int(np.argmax(f1))
    threshold = float(min(max(thr[k], 0.01), 0.99))
    figures["val_best_dice_calibrated"] = float(f1[k])
    figures["threshold"] = threshold
    return knots, threshold, figures
