"""training/oof_predictions.py: what a fold model predicts for its held-out photos, stored
compactly; the calibration and the review fit read back from the file give what they give on
the photos themselves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from helpers import tiny_config
from lesionseg_training.calibrate import calibrate_pooled
from lesionseg_training.fit_review import fit_review_pooled
from lesionseg_training.oof_predictions import KEEP_ABOVE, Predicted, load, load_meta, pack, save, unpack
from napari_lesionseg.core.errors import LesionsegInputError


def _photo(k: int, outputs: int = 1) -> Predicted:
    """A disc with blobs of lesion, an over-confident model's probabilities (smooth background
    near 1e-4, blobs that are and are not lesions, rims), unscored pixels inside the disc."""
    rng = np.random.default_rng(k)
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 45 ** 2
    truth = np.zeros((h, w), bool)
    signal = np.zeros((h, w))
    for j in range(14):  # lesions the model sees, faint lesions, faint blobs that are none
        cy, cx, r = rng.integers(15, h - 15), rng.integers(20, w - 20), rng.integers(2, 7)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        signal += disc * (14 if j < 5 else 7)
        truth |= disc & (j < 10)
    z = ndi.gaussian_filter(rng.normal(0, 4, (h, w)), 2) - 9 + ndi.gaussian_filter(signal, 1.5)
    z += 12 * ((yy - 20) ** 2 + (xx - 100) ** 2 < 9) * (k % 2)  # a false alarm in every other photo
    z = 2 * z + 10  # over-confident, as a network trained with a positive class weight
    probs = np.stack([1 / (1 + np.exp(-(z + 1.5 * j))) for j in range(outputs)]).astype(np.float32)
    labels = np.where(truth, 1, 0).astype(np.uint8)
    labels[(yy > 80) & (xx < 30)] = 255  # not scored inside the disc
    labels = np.stack([labels] * outputs)
    labels[:, ~fov] = 255
    return Predicted(f"p{k}", probs, labels, fov)


def _fits(cfg, photos):
    calibrated, figures = calibrate_pooled(cfg, photos)
    reviewed, review = fit_review_pooled(calibrated, photos)
    return reviewed, figures, review


def test_read_back_gives_the_same_fits() -> None:
    cfg = tiny_config()
    photos = [_photo(k) for k in range(8)]
    back = [unpack(p.id, pack(p)) for p in photos]
    assert all(b.kept_above == KEEP_ABOVE for b in back)
    kept = sum((pack(p)["kept"] > 0).sum() for p in photos)
    assert 0.2 < kept / sum(p.fov.sum() for p in photos) < 0.9  # both ways of keeping a pixel are read back
    want, want_figs, want_review = _fits(cfg, photos)
    got, got_figs, got_review = _fits(cfg, back)
    for key in ("platt_a", "platt_b", "threshold", "val_best_dice_calibrated"):
        assert got_figs[key] == pytest.approx(want_figs[key], abs=0.01), key
    assert want_figs["val_best_dice_calibrated"] > 0.5
    assert got_review["fit_images"] == want_review["fit_images"]
    for key in ("fit_candidates", "fit_lesions"):  # regions at the floor may split or merge by a rounding
        assert got_review[key] == pytest.approx(want_review[key], rel=0.1), key
    assert got_review["fit_pixel_error_share"] == pytest.approx(want_review["fit_pixel_error_share"], rel=0.02)
    a, b = want.inference, got.inference
    q = np.linspace(0, 1, 201)
    for x, y in ((a.fuzzy.error_rate, b.fuzzy.error_rate), (a.review.missed_rate, b.review.missed_rate),
                 (a.review.false_alarm_rate, b.review.false_alarm_rate)):
        assert np.abs(np.interp(q, *x) - np.interp(q, *y)).max() < 0.05  # pixels near a bin edge cross it


def test_other_outputs_are_kept_as_counts(tmp_path: Path) -> None:
    cfg = tiny_config()
    cfg = replace(cfg, network=replace(cfg.network, outputs=["HE", "EX"]))
    photos = [_photo(k, outputs=2) for k in range(4)]
    f = tmp_path / "fold.npz"
    assert save(f, photos, {"note": "test"}) == [p.id for p in photos]
    assert load_meta(f)["note"] == "test" and load_meta(f)["photos"] == ["p0", "p1", "p2", "p3"]
    back = list(load(f, ["p1", "p3"]))
    assert [b.id for b in back] == ["p1", "p3"]
    for b, p in zip(back, (photos[1], photos[3])):
        scored = p.fov & (p.labels[1] != 255)
        assert (b.labels[1] == 1).sum() == (p.labels[1][scored] == 1).sum()
        assert (b.labels[1] == 0).sum() == (p.labels[1][scored] == 0).sum()
        big = b.probs[0] > KEEP_ABOVE  # kept pixels sit where they were, their logits within half a step
        assert np.array_equal(big, p.fov & (p.probs[0] > KEEP_ABOVE))
        logit = lambda q: np.log(np.clip(q, 1e-7, 1 - 1e-5) / (1 - np.clip(q, 1e-7, 1 - 1e-5)))  # noqa: E731
        assert np.abs(logit(b.probs[0][big].astype(float)) - logit(p.probs[0][big].astype(float))).max() < 0.051
    _, want = calibrate_pooled(cfg, [photos[1], photos[3]])
    _, got = calibrate_pooled(cfg, back)
    assert got["platt_a_EX"] == pytest.approx(want["platt_a_EX"], abs=0.01)
    assert got["threshold_EX"] == pytest.approx(want["threshold_EX"], abs=0.01)


def test_a_floor_below_what_was_kept_is_refused() -> None:
    cfg = tiny_config(threshold=0.5)
    back = [unpack(p.id, pack(p, keep_above=0.2)) for p in (_photo(0), _photo(1))]
    with pytest.raises(ValueError, match=r"p0: its stored prediction kept the pixels above raw probability 0.2"):
        fit_review_pooled(cfg, back)  # the candidate floor 0.025 reaches below the 0.2 kept
    fit_review_pooled(replace(cfg, inference=replace(cfg.inference, review=replace(cfg.inference.review, floor=0.3))),
                      back)


def test_what_is_not_a_predictions_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(LesionsegInputError, match="not a stored-predictions file") as err:
        load_meta(bad)
    assert str(bad) in str(err.value)
    (tmp_path / "y.npz").write_text("nonsense")
    with pytest.raises(LesionsegInputError, match="not a stored-predictions file"):
        load_meta(tmp_path / "y.npz")
