"""``--resume`` continues a run exactly: a run interrupted after a checkpoint and resumed ends
with the same weights, adversary and DALE state as the same run done in one go."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesionseg_training.train_config import load_config
from lesionseg_training.trainer import train


def _cfg(preset: str, pairs: Path):
    return load_config(preset, [f'data.images="{pairs / "images"}"', f'data.masks="{pairs / "masks"}"',
                                "data.val_every=2", "run.steps=8", "run.eval_every=4"])


def _state(run: Path) -> dict:
    return torch.load(run / "state.pt", weights_only=True)


def _assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("preset", ["dynsegnet_small", "dale_small"])
def test_interrupted_and_resumed_run_equals_one_go(tmp_path: Path, small_pairs: Path, preset: str) -> None:
    cfg = _cfg(preset, small_pairs)
    list(train(cfg, tmp_path / "straight"))

    gen = train(cfg, tmp_path / "interrupted")
    for ev in gen:  # stop a step after the first checkpoint, as a killed process would
        if ev["event"] == "step" and ev["step"] == 5:
            break
    gen.close()
    assert _state(tmp_path / "interrupted")["step"] == 4
    events = list(train(cfg, tmp_path / "interrupted", resume=True))
    assert {"event": "resumed", "step": 4} in events

    a, b = _state(tmp_path / "straight"), _state(tmp_path / "interrupted")
    assert a["step"] == b["step"] == 8
    if preset == "dale_small":
        assert a["dale"]["passes"] >= 2 and b["dale"]["passes"] == a["dale"]["passes"]
    else:
        assert a["adversary"] is not None
    for key in ("model", "optim", "adversary", "dale", "rng"):
        _assert_same(a[key], b[key], key)
