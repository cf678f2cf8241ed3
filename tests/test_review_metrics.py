"""The figures `lesionseg evaluate` reports about the fuzzy map and the review queue."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionseg.core.model_config import ReviewConfig
from napari_lesionseg.core.review import review_regions
from napari_lesionseg.core.review_metrics import ReviewTally, queue_reach, top_capture


def test_top_capture_counts_the_wrong_pixels_among_the_highest() -> None:
    region = np.ones((10, 10), bool)
    score = np.arange(100, dtype=np.float32).reshape(10, 10)
    wrong = np.zeros((10, 10), bool)
    wrong.flat[[99, 98, 50, 3]] = True
    # top 1 % = 1 px (99), top 5 % = 5 px (95..99), top 10 % = 10 px (90..99)
    np.testing.assert_allclose(top_capture(score, wrong, region), [1, 2, 2])
    np.testing.assert_allclose(top_capture(score, wrong, region, (0.51,)), [3])
    # pixels outside the region do not count, and are not ranked
    region[9, 9] = False
    np.testing.assert_allclose(top_capture(score, wrong, region, (0.01,)), [1])  # 98 is now the top


def test_top_capture_shares_ties_out_evenly() -> None:
    """A saturated map (every pixel 1.0) gets what chance gives, not all its wrong pixels."""
    region = np.ones((10, 10), bool)
    wrong = np.zeros((10, 10), bool)
    wrong.flat[:20] = True
    flat = np.ones((10, 10), np.float32)
    np.testing.assert_allclose(top_capture(flat, wrong, region), [0.2, 1.0, 2.0])


def _scene():
    """Two annotated lesions the mask misses (one touched by a candidate region), one found,
    one false alarm."""
    mask = np.zeros((100, 100), np.uint8)
    prob = np.zeros((100, 100), np.float32)
    gt = np.zeros((100, 100), bool)
    gt[10:20, 10:20] = True
    mask[10:20, 10:20] = 1  # found
    prob[10:20, 10:20] = 0.9
    gt[40:50, 40:50] = True  # missed; the probability rises a little there
    prob[42:48, 42:48] = 0.1
    gt[80:85, 10:15] = True  # missed; nothing there
    mask[70:80, 70:80] = 1  # a false alarm
    prob[70:80, 70:80] = 0.6
    return mask, prob, gt


def test_queue_reach_counts_missed_lesions_and_false_alarms() -> None:
    mask, prob, gt = _scene()
    rs = review_regions(mask, prob, np.zeros_like(prob), threshold=0.5, min_fuzzy_area=1)
    q = queue_reach(rs, gt)
    assert (q.missed, q.missed_reached, q.false_alarms, q.false_alarms_shown) == (2, 1, 1, 1)
    # only the first `first` regions count
    first = rs.regions[:1]
    q1 = queue_reach(rs, gt, first=1)
    assert q1.missed_reached == int(first[0].kind == "fuzzy") and q1.false_alarms_shown == int(
        first[0].kind == "lesion" and first[0].bbox == (70, 70, 80, 80))
    review = ReviewConfig(missed_rate=[[0.025, 0.5], [0.9, 0.9]], false_alarm_rate=[[0.5, 1.0], [0.1, 0.1]])
    rs = review_regions(mask, prob, np.zeros_like(prob), threshold=0.5, review=review, min_fuzzy_area=1)
    assert rs.regions[0].kind == "fuzzy"
    q = queue_reach(rs, gt, first=1)
    assert (q.missed_reached, q.false_alarms_shown) == (1, 0)


def test_tally_summary_names_and_ratios() -> None:
    mask, prob, gt = _scene()
    t = ReviewTally()
    rs = review_regions(mask, prob, np.zeros_like(prob), threshold=0.5, min_fuzzy_area=1)
    t.add(10, {"fuzzy": np.array([1.0, 5.0, 8.0])}, {"fuzzy": queue_reach(rs, gt)})
    t.add(10, {"fuzzy": np.array([1.0, 5.0, 10.0])}, {"fuzzy": queue_reach(rs, gt)})
    s = t.summary()
    assert s["fuzzy_top1pct_error_capture"] == pytest.approx(0.1)
    assert s["fuzzy_top10pct_error_capture"] == pytest.approx(0.9)
    assert s["fuzzy_queue_missed_lesions"] == 4 and s["fuzzy_queue_missed_reached"] == pytest.approx(0.5)
    assert s["fuzzy_queue_false_alarms_shown"] == pytest.approx(1.0)
