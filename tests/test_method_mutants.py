"""``benchmarks/method_mutants.py`` (issue 11): its mutants still break the code they name. A
mutant whose code has moved on would be reported "not applied" only when someone runs the
seven-minute check; here the suite says so at once."""

from __future__ import annotations

from pathlib import Path

from helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


def test_every_mutant_breaks_code_that_is_there_once() -> None:
    mm = benchmark_module("method_mutants")
    assert len(mm.MUTANTS) >= 35
    assert len({m.name for m in mm.MUTANTS}) == len(mm.MUTANTS)
    for m in mm.MUTANTS:
        src = (ROOT / m.file).read_text()
        assert src.count(m.old) == 1, f"{m.name}: its code is not in {m.file} exactly once"
        assert m.new != m.old and m.tests
        for t in m.tests:
            assert (ROOT / t.split("::")[0]).is_file(), f"{m.name}: no test file {t}"
            if "::" in t:
                assert f"def {t.split('::')[1]}(" in (ROOT / t.split("::")[0]).read_text()
