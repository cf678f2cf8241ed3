"""``benchmarks/review_expected.py``: which review regions count as mistakes, and its sums."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import benchmark_module
from napari_lesionseg.core.model_config import ReviewConfig
from napari_lesionseg.core.review import review_regions


def test_a_false_alarm_and_a_real_miss_are_the_mistakes() -> None:
    bench = benchmark_module("review_expected")
    prob = np.zeros((100, 100), np.float32)
    mask = np.zeros((100, 100), np.uint8)
    gt = np.zeros((100, 100), bool)
    mask[5:15, 5:15], prob[5:15, 5:15], gt[8:12, 8:12] = 1, 0.9, True  # a found lesion
    mask[5:15, 50:60], prob[5:15, 50:60] = 1, 0.8  # a false alarm
    prob[50:60, 5:15], gt[52:55, 8:10] = 0.2, True  # a possible miss that is one
    prob[50:60, 50:60] = 0.1  # a possible miss that is none
    review = ReviewConfig(missed_rate=[[0.0, 0.5], [0.0, 1.0]], false_alarm_rate=[[0.5, 1.0], [0.5, 0.0]])
    rs = review_regions(mask, prob, np.zeros_like(prob), threshold=0.5, review=review)
    wrong = dict(zip([(r.kind, r.bbox) for r in rs.regions], bench.mistakes(rs, gt)))
    assert wrong == {("lesion", (5, 5, 15, 15)): False, ("lesion", (5, 50, 15, 60)): True,
                     ("fuzzy", (50, 5, 60, 15)): True, ("fuzzy", (50, 50, 60, 60)): False}


def test_the_summary_adds_expected_and_actual_over_photos() -> None:
    bench = benchmark_module("review_expected")
    rows = [{"expected": e, "actual": a, "expected_first": e / 2, "actual_first": a // 2}
            for e, a in ((3.0, 4), (10.0, 9), (1.0, 1))]
    s = bench.summary(rows)
    assert (s["photos"], s["expected"], s["actual"], s["actual_first"]) == (3, 14.0, 14, 6)
    assert s["median_abs_diff"] == pytest.approx(1.0) and s["corr"] > 0.9
