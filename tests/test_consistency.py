"""Mean-teacher consistency on unannotated photos (training/consistency.py): the turn the student
sees is undone before it is compared, the teacher follows the student, copies of annotated
photos stay out, and a run trains and resumes with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_until
from lesionseg_training.consistency import Consistency, prepare_unlabelled, rampup, turn, turn_back


def test_every_turn_is_undone_and_only_by_its_own_inverse() -> None:
    t = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    turns = [(k, m) for k in range(4) for m in (False, True)]
    images = {tuple(turn(t, k, m).flatten().tolist()) for k, m in turns}
    assert len(images) == 8  # the eight symmetries of the square, all different
    for k, m in turns:
        assert torch.equal(turn_back(turn(t, k, m), k, m), t)
    assert not torch.equal(turn_back(turn(t, 1, True), 1, False), t)  # a mirror left in is caught


def test_the_weight_ramps_up_then_holds() -> None:
    assert rampup(0.0, 0.4) == pytest.approx(np.exp(-5))
    assert rampup(0.2, 0.4) == pytest.approx(np.exp(-5 * 0.25))
    assert rampup(0.4, 0.4) == rampup(0.9, 0.4) == 1.0


def _config(small_pairs: Path, unlabelled: Path, *extra: str):
    from lesionseg_training.train_config import load_config

    return load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                                "data.val_every=2", "run.steps=6", "run.eval_every=6", f'data.unlabelled="{unlabelled}"',
                                "loss.consistency_weight=5.0", "loss.consistency_rampup=0.01",
                                "loss.consistency_batch=2", *extra])


def test_the_loss_is_zero_when_the_student_agrees_under_the_turn(small_pairs: Path, tmp_path: Path) -> None:
    """The student sees the crops turned: its probabilities, turned back, are compared with the
    teacher's; agreeing (up to the turn) costs nothing, agreeing without the turn does not."""
    from napari_lesionseg.core.models import build_model

    unl = tmp_path / "unl"
    shutil.copytree(small_pairs / "images", unl)
    cfg = _config(small_pairs, unl)
    items, _ = prepare_unlabelled(unl, cfg.model.preprocess)
    net = build_model(cfg.model.network)
    c = Consistency(cfg, items, net, seed=3)
    xt, xs, how = c.inputs(torch.device("cpu"))
    assert xs.shape == xt.shape == (2, cfg.model.network.in_channels, cfg.data.crop_size, cfg.data.crop_size)
    target = torch.rand(2, 1, *xt.shape[-2:]) * 0.98 + 0.01
    agree = torch.logit(turn(target, *how))
    loss, w = c.loss(agree, target, how, progress=1.0)
    assert w == 5.0 and float(loss) < 1e-8
    unturned = torch.logit(target)
    if how != (0, False):
        assert float(c.loss(unturned, target, how, progress=1.0)[0]) > 1e-3
    # the student's input is the teacher's turned (and jittered): turned back, it is close to it
    back = turn_back(xs, *how)
    assert float((back - xt).abs().mean()) < 0.3 and not torch.equal(back, xt)


def test_copies_of_annotated_photos_are_left_out(small_pairs: Path, tmp_path: Path) -> None:
    from lesionseg_training.train_config import load_config
    from lesionseg_training.trainer import train

    unl = tmp_path / "unl"
    shutil.copytree(small_pairs / "images", unl)
    items, left = prepare_unlabelled(unl, load_config("tiny").model.preprocess, not_like=small_pairs / "images")
    assert not items and set(left) == {p.stem for p in unl.glob("*.jpg")}
    cfg = _config(small_pairs, unl, f'data.unlabelled_not_like="{small_pairs / "images"}"')
    with pytest.raises(ValueError, match="no photos"):
        list(train(cfg, tmp_path / "run"))
    with pytest.raises(ValueError, match="together"):
        load_config("tiny", ["loss.consistency_weight=1.0"])
    with pytest.raises(ValueError, match="standard paradigm"):
        _config(small_pairs, unl, 'paradigm.type="dale"')


def test_a_run_trains_with_a_mean_teacher_and_resumes_it_exactly(small_pairs: Path, tmp_path: Path) -> None:
    """The teacher follows the student (an average, not the last weights), the photos enter the
    lineage and the cache, and a run interrupted after a checkpoint and resumed ends with the
    same weights, optimiser, teacher and random streams as the same run in one go."""
    from test_resume import _assert_same, _state

    from lesionseg_training.trainer import train

    unl = tmp_path / "unl"
    shutil.copytree(small_pairs / "images", unl)
    cfg = _config(small_pairs, unl, f'data.cache_dir="{tmp_path / "cache"}"', "run.steps=8", "run.eval_every=4")
    events = list(train(cfg, tmp_path / "straight"))
    unl_ev = next(e for e in events if e["event"] == "unlabelled")
    assert unl_ev["photos"] == 2 and unl_ev["left_out"] == 0
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all(e["consistency_weight"] > 0 for e in steps) and any(e["consistency"] > 0 for e in steps)
    lineage = json.loads((tmp_path / "straight" / "last" / "lineage.json").read_text())
    assert sorted(lineage["unlabelled"]["photos"]) == sorted(p.stem for p in unl.glob("*.jpg"))
    assert len(list((tmp_path / "cache").glob("unlabelled-*.npz"))) == 2
    st = _state(tmp_path / "straight")
    teacher, student = st["consistency"]["teacher"], st["model"]
    assert int(teacher["n_averaged"]) == 8
    assert any(not torch.equal(teacher[f"module.{k}"], v) for k, v in student.items() if k.endswith("weight"))
    train_until(cfg, tmp_path / "interrupted", 5)  # killed a step after a checkpoint
    assert {"event": "resumed", "step": 4} in list(train(cfg, tmp_path / "interrupted", resume=True))
    b = _state(tmp_path / "interrupted")
    for key in ("model", "optim", "consistency", "rng"):
        _assert_same(st[key], b[key], key)


def test_a_step_pulls_the_student_by_the_weight_and_moves_the_teacher(small_pairs: Path, tmp_path: Path) -> None:
    """The same step (same crops, same draws) from the same weights ends elsewhere when only the
    consistency weight differs; after it the teacher has moved towards the student."""
    import copy

    from lesionseg_training.trainer import make_optimizer, train_one_step
    from napari_lesionseg.core.models import build_model

    unl = tmp_path / "unl"
    shutil.copytree(small_pairs / "images", unl)
    cfg = _config(small_pairs, unl)
    items, _ = prepare_unlabelled(unl, cfg.model.preprocess)
    torch.manual_seed(0)
    start = build_model(cfg.model.network)
    rng = np.random.default_rng(0)
    s = cfg.data.crop_size
    x = rng.normal(size=(2, cfg.model.network.in_channels, s, s)).astype(np.float32)
    y = (rng.random((2, s, s)) < 0.05).astype(np.uint8)
    ends = []
    for progress in (0.0, 1.0):  # weight 5 * exp(-5) against 5
        net = copy.deepcopy(start).train()
        c = Consistency(cfg, items, net, seed=3)
        before = {k: v.clone() for k, v in c.teacher.module.state_dict().items()}
        torch.manual_seed(1)
        logs = train_one_step(net, make_optimizer(list(net.parameters()), cfg.optim), x, y, cfg,
                              consistency=c, progress=progress)
        assert logs["consistency_weight"] == pytest.approx(5.0 * rampup(progress, 0.01))
        after = c.teacher.module.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
        ends.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert not torch.equal(ends[0], ends[1])
