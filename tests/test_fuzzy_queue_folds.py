"""The table of ``benchmarks/fuzzy_queue_folds.py`` (issue 12, the map on folds)."""

from __future__ import annotations

from helpers import benchmark_module


def _bench():
    return benchmark_module("fuzzy_queue_folds")


def test_the_table_sums_the_lesion_counts_over_the_folds() -> None:
    fq = _bench()
    row = {"model": "m", "aupr": 0.5, "missed_lesions": 10, "false_alarms": 20,
           "fuzzy_queue_missed_reached": 3, "entropy_queue_missed_reached": 1,
           "fuzzy_queue_false_alarms_shown": 12, "entropy_queue_false_alarms_shown": 11,
           **{f"{n}_top{k}": 0.1 * k for n in ("fuzzy", "entropy") for k in (1, 5, 10)}}
    last = fq.table([row, {**row, "missed_lesions": 5, "fuzzy_queue_missed_reached": 2}]).splitlines()[-1]
    assert last == "| all | | | | 5 of 15 | 2 | 24 of 40 | 22 |"
