"""The benchmarks' results files: strict JSON (a score of nothing is null, never the bare word
NaN that JSON readers other than Python's reject), and the comparison tables read them."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import benchmark_module

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _strict(text: str) -> object:
    def refuse(word: str) -> None:
        raise ValueError(f"bare {word}")

    return json.loads(text, parse_constant=refuse)


def test_every_results_file_is_strict_json() -> None:
    files = sorted(RESULTS.glob("*.json"))
    assert len(files) > 100  # the folder is there (a clone holds it)
    bad = []
    for f in files:
        try:
            _strict(f.read_text())
        except ValueError as err:
            bad.append(f"{f.name}: {err}")
    assert not bad, bad


def _run(variant: str, fold: int, aupr: float | None, fr_aupr: float) -> dict:
    curve = [] if aupr is None else [{"step": 4000, "val_aupr": aupr, "val_dice": aupr - 0.05}]
    return {"variant": variant, "fold": fold, "noise": "none", "steps": 4000, "val_aupr": aupr,
            "val_dice": None if aupr is None else aupr - 0.05, "fr_aupr": fr_aupr, "fr_dice_ds": 0.6,
            "minutes": 40.0, "curve": curve, "steps_budget": 4000, "minutes_budget": None}


def test_the_tables_show_a_composed_ensemble_without_validation(tmp_path: Path, capsys) -> None:
    """A composed ensemble (trained nothing, validated never) is written with null validation
    scores, is tabled with "-" there and its full-resolution scores beside the trained runs';
    a results file from before (NaN there) reads the same."""
    cp = benchmark_module("compare_presets")
    new = tmp_path / "new.json"
    old = tmp_path / "old.json"
    rows = [_run("default", 0, 0.62, 0.66), _run("default", 1, 0.58, 0.60), _run("pair", 0, None, 0.68)]
    new.write_text(json.dumps({"runs": rows}))
    old.write_text(json.dumps({"runs": [{**rows[2], "fold": 1, "val_aupr": float("nan"),
                                         "val_dice": float("nan"), "fr_aupr": 0.64}]}))
    merged = tmp_path / "merged.json"
    cp.report([str(new), str(old)], str(merged))
    out = capsys.readouterr().out
    pair = [line for line in out.splitlines() if line.startswith("pair")]
    assert pair[0].split()[1:4] == ["2", "-", "-"], out  # two folds, no validation AUPR or Dice
    assert "aupr 0.660 ± 0.028" in pair[1], out  # full resolution: 0.68 and 0.64
    assert any(line.startswith("default") and "0.600 ± 0.028" in line for line in out.splitlines()), out
    assert [r["val_aupr"] for r in _strict(merged.read_text())["runs"]] == [0.62, 0.58, None, None]


def test_the_speed_benchmarks_tuned_process_is_set_up_as_lesionseg_predicts(monkeypatch) -> None:
    """predict_speed's "tuned" worker sets up its process as `lesionseg predict` does (the glibc
    allocator tuned by cli.run_command); for nine days it did not, and its figures were 0.2 s
    slower than the command's. "plain" keeps the default allocator."""
    from napari_lesionseg import cli
    from napari_lesionseg.core import runtime

    calls: list[str] = []
    monkeypatch.setattr(runtime, "tune_allocator", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(cli, "_interrupt_on_sigterm", lambda: None)
    cli.run_command(lambda args: 0, None)
    assert calls == ["tuned"]  # what the command does, seen the same way as the benchmark below
    ps = benchmark_module("predict_speed")
    assert ps.process_setup("plain") is False and calls == ["tuned"]
    assert ps.process_setup("tuned") is True and calls == ["tuned", "tuned"]
