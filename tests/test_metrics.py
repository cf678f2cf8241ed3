"""Metrics (METHODS.md 5)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionseg.core.metrics import DatasetScores, PooledPR, confusion, hd95, scores


def _square(shift: int = 0) -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[10:20, 10 + shift:20 + shift] = True
    return m


def test_perfect_prediction() -> None:
    s = scores(confusion(_square(), _square()))
    assert all(s[k] == 1.0 for k in ("dice", "iou", "precision", "recall", "accuracy"))
    assert hd95(_square(), _square()) == 0.0


@pytest.mark.parametrize("convention", ["medpy", "max_directed"])
def test_one_pixel_shift_gives_hd95_one(convention: str) -> None:
    assert hd95(_square(1), _square(), convention) == pytest.approx(1.0)


def test_hd95_conventions_differ_on_asymmetric_case() -> None:
    a = np.zeros((60, 60), bool)
    a[10:20, 10:20] = True
    b = a.copy()
    b[40:42, 40:42] = True  # a far blob only in b
    assert hd95(a, b, "max_directed") >= hd95(a, b, "medpy")
    assert np.isnan(hd95(np.zeros((5, 5), bool), a[:5, :5]))


def test_per_image_and_dataset_dice_differ() -> None:
    big_gt = np.zeros((100, 100), bool)
    big_gt[:50] = True
    big_pred = big_gt.copy()  # perfect on the big lesion
    small_gt = np.zeros((100, 100), bool)
    small_gt[0, :4] = True
    small_pred = np.zeros((100, 100), bool)
    small_pred[0, 2:6] = True  # half right on the small one
    ds = DatasetScores(threshold=0.5)
    ds.add("big", big_pred.astype(float), big_gt)
    ds.add("small", small_pred.astype(float), small_gt)
    s = ds.summary()
    assert s["dice_img"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["dice_ds"] == pytest.approx(2 * 5002 / (2 * 5002 + 2 + 2))
    assert s["dice_ds"] > s["dice_img"]


def test_empty_conventions() -> None:
    e = np.zeros((10, 10), bool)
    assert scores(confusion(e, e))["dice"] == 1.0
    p = e.copy()
    p[0, 0] = True
    assert scores(confusion(p, e))["dice"] == 0.0
    ds = DatasetScores(empty="exclude")
    ds.add("empty", e.astype(float), e)
    ds.add("real", _square().astype(float), _square())
    assert ds.summary()["empty_gt_images"] == 1 and ds.summary()["dice_img"] == 1.0


def test_ignore_pixels_are_excluded() -> None:
    gt = _square()
    pred = gt.copy()
    pred[0, 0] = True
    valid = np.ones_like(gt)
    valid[0, 0] = False
    assert scores(confusion(pred, gt, valid))["dice"] == 1.0


def test_pooled_aupr_matches_average_precision_by_hand() -> None:
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    gt = np.array([1, 0, 1, 0, 1], bool)
    pr = PooledPR(bins=100)
    pr.add(prob, gt)
    # ranked: 1 (P=1, R=1/3), 0, 1 (P=2/3, R=2/3), 0, 1 (P=3/5, R=1)
    expected = (1 / 3) * 1.0 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert pr.aupr() == pytest.approx(expected)
    perfect = PooledPR(bins=256)
    perfect.add(np.array([0.9, 0.1]), np.array([True, False]))
    assert perfect.aupr() == 1.0


def test_pooled_over_images_equals_one_big_image() -> None:
    rng = np.random.default_rng(0)
    p1, p2 = rng.random((20, 20)), rng.random((20, 20))
    g1, g2 = rng.random((20, 20)) > 0.8, rng.random((20, 20)) > 0.9
    a = PooledPR(256)
    a.add(p1, g1)
    a.add(p2, g2)
    b = PooledPR(256)
    b.add(np.concatenate([p1, p2]), np.concatenate([g1, g2]))
    assert a.aupr() == b.aupr()


def test_lesion_level_precision_and_recall() -> None:
    from napari_lesionseg.core.metrics import LesionCounts

    gt = np.zeros((20, 20), bool)
    gt[2:5, 2:5] = True  # found
    gt[10:12, 10:12] = True  # missed
    pred = np.zeros_like(gt)
    pred[3:6, 3:6] = True  # touches the first
    pred[15:18, 2:4] = True  # a false alarm
    pred[0, 19] = True  # another, but on a pixel marked unsure
    valid = np.ones_like(gt)
    valid[0, 19] = False
    counts = LesionCounts()
    row = counts.add(pred, gt, valid)
    assert row["lesion_recall"] == 0.5 and row["lesion_precision"] == 0.5 and row["pred_lesions"] == 2
    counts.add(np.zeros_like(gt), np.zeros_like(gt))  # an empty photo changes nothing
    assert counts.summary() == {"lesion_recall": 0.5, "lesion_precision": 0.5, "gt_lesions": 2.0, "pred_lesions": 2.0}


def test_scores_pooled_over_runs_equal_one_run_over_all_images() -> None:
    """Out-of-fold figures: each fold's scores, saved as JSON and pooled, give what one scoring
    of every photo gives (one precision-recall curve, summed counts, every photo's row)."""
    import json

    from napari_lesionseg.core.metrics import DatasetScores, pool_scores

    rng = np.random.default_rng(3)
    images = []
    for i in range(6):
        gt = np.zeros((40, 50), bool)
        gt[rng.integers(0, 30):, rng.integers(0, 40):][:8, :8] = True
        prob = np.clip(gt * 0.3 + rng.random(gt.shape) * (0.5 + 0.1 * i), 0, 1)  # photos differ
        images.append((f"im{i}", np.rint(prob * 255) / 255, gt))
    whole = DatasetScores(threshold=0.5, pr_bins=256)
    parts = [DatasetScores(threshold=0.5, pr_bins=256) for _ in range(3)]
    for k, (name, prob, gt) in enumerate(images):
        whole.add(name, prob, gt)
        parts[k % 3].add(name, prob, gt)
    back = [DatasetScores.from_state(json.loads(json.dumps(p.state()))) for p in parts]
    pooled = pool_scores(back).summary()
    expected = whole.summary()
    for key in ("aupr", "dice_ds", "dice_img", "recall_ds", "images"):
        assert pooled[key] == pytest.approx(expected[key], abs=1e-12), key
    # each fold on its own scores differently: pooling is not averaging the folds' AUPRs
    assert pooled["aupr"] != pytest.approx(np.mean([p.summary()["aupr"] for p in parts]), abs=1e-6)
    mixed = DatasetScores(threshold=0.3, pr_bins=256)
    mixed.add("x", images[0][1], images[0][2])
    assert np.isnan(pool_scores([parts[0], mixed]).threshold)
    with pytest.raises(ValueError, match="bin counts"):
        pool_scores([parts[0], DatasetScores(pr_bins=65536)])


def test_a_mask_given_is_scored_instead_of_the_thresholded_probability() -> None:
    """The optic disc's written mask keeps one region: its Dice is that mask's, its AUPR the
    probability's."""
    gt = np.zeros((20, 20), bool)
    gt[2:8, 2:8] = True
    prob = np.zeros((20, 20), np.float32)
    prob[2:8, 2:8] = 0.9
    prob[12:18, 12:18] = 0.8  # a second region above the threshold
    one = prob > 0.85
    plain, kept = DatasetScores(threshold=0.5), DatasetScores(threshold=0.5)
    assert plain.add("x", prob, gt)["dice"] == pytest.approx(2 / 3)  # 2 x 36 / (36 + 72)
    assert kept.add("x", prob, gt, mask=one)["dice"] == 1.0
    assert kept.summary()["aupr"] == pytest.approx(plain.summary()["aupr"])
