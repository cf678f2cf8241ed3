"""``--resume`` continues a run exactly: a run interrupted after a checkpoint and resumed ends
with the same weights, adversary and DALE state as the same run done in one go."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import train_until
from lesionseg_training.train_config import load_config
from lesionseg_training.trainer import train


def _cfg(preset: str, pairs: Path, *extra: str):
    return load_config(preset, [f'data.images="{pairs / "images"}"', f'data.masks="{pairs / "masks"}"',
                                "data.val_every=2", "run.steps=8", "run.eval_every=4", *extra])


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

    train_until(cfg, tmp_path / "interrupted", 5)  # killed a step after a checkpoint
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


def test_resume_state_between_validations_continues_exactly(tmp_path: Path, small_pairs: Path) -> None:
    """``run.state_every``: the resume state is also written between validations, so a run
    killed at step 7 (validations at 4 and 8) continues from step 6, not 4, and still ends as
    the one-go run."""
    cfg = _cfg("dale_small", small_pairs, "run.state_every=3")
    list(train(cfg, tmp_path / "straight"))
    train_until(cfg, tmp_path / "interrupted", 7)  # killed a step after a checkpoint
    assert _state(tmp_path / "interrupted")["step"] == 6
    assert not (tmp_path / "interrupted" / ".state.tmp").exists()
    # the clock a resume continues from: as if the first sitting had run 1000 s
    state = _state(tmp_path / "interrupted")
    torch.save({**state, "elapsed": 1000.0}, tmp_path / "interrupted" / "state.pt")
    events = list(train(cfg, tmp_path / "interrupted", resume=True))
    assert {"event": "resumed", "step": 6} in events
    timed = [e for e in events if e["event"] in ("step", "eval", "done")]
    assert timed and all(e["elapsed"] >= 1000.0 for e in timed), "a resumed run's clock restarted at zero"
    with open(tmp_path / "interrupted" / "metrics.csv") as f:
        column = [float(line.split(",")[0]) for line in f.readlines()[1:]]
    assert column == sorted(column) and column[-1] >= 1000.0
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "interrupted")
    for key in ("model", "optim", "adversary", "dale", "rng"):
        _assert_same(a[key], b[key], key)
    with pytest.raises(ValueError, match="state_every"):
        _cfg("tiny", small_pairs, "run.state_every=-1")


def test_weight_average_is_what_is_saved_and_resumes_exactly(tmp_path: Path, small_pairs: Path) -> None:
    """``optim.ema``: the saved model is the moving average of the weights (not the live
    weights), every step moves it towards them, and a resumed run continues it exactly."""
    from napari_lesionseg.core.model_folder import load_model_folder

    cfg = _cfg("tiny", small_pairs, "optim.ema=0.5")
    list(train(cfg, tmp_path / "straight"))
    st = _state(tmp_path / "straight")
    live, avg = st["model"], {k[len("module."):]: v for k, v in st["ema"].items() if k.startswith("module.")}
    assert int(st["ema"]["n_averaged"]) == 8 and live.keys() == avg.keys()
    saved = load_model_folder(tmp_path / "straight" / "last").net.state_dict()
    weights = [k for k, v in live.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(saved[k], avg[k]) for k in weights)
    assert any(not torch.equal(live[k], avg[k]) for k in weights)  # the average lags the live weights
    train_until(cfg, tmp_path / "interrupted", 5)  # killed a step after a checkpoint
    list(train(cfg, tmp_path / "interrupted", resume=True))
    _assert_same(_state(tmp_path / "straight")["ema"], _state(tmp_path / "interrupted")["ema"], "ema")
    plain = _cfg("tiny", small_pairs)
    assert plain.optim.ema == 0.0
    list(train(plain, tmp_path / "plain"))
    assert _state(tmp_path / "plain")["ema"] is None


def test_weight_average_moves_by_one_minus_decay_per_step() -> None:
    from lesionseg_training.trainer import _weight_average

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_mean.fill_(1.0)
    avg = _weight_average(net, 0.75)
    avg.update_parameters(net)  # the first update copies
    with torch.no_grad():
        net[0].weight.fill_(5.0)
        net[1].running_mean.fill_(5.0)
    avg.update_parameters(net)
    assert float(avg.module[0].weight.detach()) == 2.0  # 0.75 * 1 + 0.25 * 5
    assert float(avg.module[1].running_mean) == 2.0  # BatchNorm statistics are averaged too
    assert _weight_average(net, 0.0) is None
