"""The fold bookkeeping of ``benchmarks/fuzzy_queue_folds.py`` (issue 12, the map on folds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import benchmark_module


def _bench():
    return benchmark_module("fuzzy_queue_folds")


def _idrid(root: Path, ids: list[str], masks: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks_HE").mkdir()
    for pid in ids:
        (root / "images" / f"{pid}.jpg").write_bytes(b"jpg")
    for pid in masks:
        (root / "masks_HE" / f"{pid}_HE.tif").write_bytes(b"tif")
    return root


def test_the_fold_folder_holds_exactly_the_folds_photos_and_masks(tmp_path: Path) -> None:
    fq = _bench()
    data = _idrid(tmp_path / "idrid", ["IDRiD_01", "IDRiD_02", "IDRiD_06"], ["IDRiD_01", "IDRiD_02", "IDRiD_06"])
    out = fq.fold_folder(tmp_path / "work", ["IDRiD_06", "IDRiD_01"], data)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["IDRiD_01.jpg", "IDRiD_06.jpg"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["IDRiD_01_HE.tif", "IDRiD_06_HE.tif"]
    assert (out / "masks" / "IDRiD_06_HE.tif").read_bytes() == b"tif"
    assert fq.fold_folder(tmp_path / "work", ["IDRiD_01", "IDRiD_06"], data) == out  # again: the same folder


def test_a_fold_photo_without_its_mask_is_named(tmp_path: Path) -> None:
    fq = _bench()
    data = _idrid(tmp_path / "idrid", ["IDRiD_01", "IDRiD_43"], ["IDRiD_01"])
    with pytest.raises(SystemExit, match="IDRiD_43_HE.tif"):
        fq.fold_folder(tmp_path / "work", ["IDRiD_01", "IDRiD_43"], data)


def test_the_table_sums_the_lesion_counts_over_the_folds() -> None:
    fq = _bench()
    row = {"model": "m", "aupr": 0.5, "missed_lesions": 10, "false_alarms": 20,
           "fuzzy_queue_missed_reached": 3, "entropy_queue_missed_reached": 1,
           "fuzzy_queue_false_alarms_shown": 12, "entropy_queue_false_alarms_shown": 11,
           **{f"{n}_top{k}": 0.1 * k for n in ("fuzzy", "entropy") for k in (1, 5, 10)}}
    last = fq.table([row, {**row, "missed_lesions": 5, "fuzzy_queue_missed_reached": 2}]).splitlines()[-1]
    assert last == "| all | | | | 5 of 15 | 2 | 24 of 40 | 22 |"
