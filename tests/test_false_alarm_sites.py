"""``benchmarks/false_alarm_sites.py``: each false pixel counts once, at the first site it lies in
(a hemorrhage's rim before a microaneurysm), other types' lesions widened by the radius, the disc
not widened."""

from __future__ import annotations

import numpy as np

from helpers import benchmark_module


class _Pair:
    """What ``site_masks`` reads of a photo: its other types' labels."""

    def __init__(self, labels: dict[str, np.ndarray]) -> None:
        self.labels = labels

    def read_types(self, names: list[str], shape: tuple[int, int]) -> dict[str, np.ndarray | None]:
        return {n: self.labels.get(n) for n in names}


def test_false_pixels_go_to_the_first_site_they_lie_in() -> None:
    fas = benchmark_module("false_alarm_sites")
    shape = (60, 60)
    he = np.zeros(shape, bool)
    he[10, 10] = True
    ma = np.zeros(shape, np.uint8)
    ma[10, 14] = 1  # 4 px from the hemorrhage: its rim and a microaneurysm's surround overlap there
    ma[40, 40] = 1
    od = np.zeros(shape, np.uint8)
    od[50:55, 5:10] = 1
    sites = fas.site_masks(_Pair({"MA": ma, "OD": od}), shape, he, radius=3)
    wrong = np.zeros(shape, bool)
    wrong[10, 13] = True  # rim (within 6 px of the hemorrhage) and beside a microaneurysm: rim
    wrong[40, 43] = True  # 3 px from the far microaneurysm
    wrong[40, 45] = True  # 5 px from it: elsewhere
    wrong[52, 7] = True  # on the disc
    wrong[52, 11] = True  # beside the disc, which is not widened: elsewhere
    got = fas.assign(wrong, sites)
    assert got == {"HE rim": 1.0, "MA": 1.0, "EX": 0.0, "SE": 0.0, "OD": 1.0, "elsewhere": 2.0}
    assert sum(fas.assign(wrong * 0.5, sites).values()) == 2.5  # weights, not counts, when given
