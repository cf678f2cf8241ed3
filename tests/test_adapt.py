"""training/adapt.py: BatchNorm statistics re-estimated on a new camera's photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny_config
from lesionseg_training.adapt import reestimate_batchnorm
from lesionseg_training.data import Prepared
from napari_lesionseg.core.models import build_model


def _items(offset: float) -> list[Prepared]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(2):
        x = (rng.normal(offset, 2.0, size=(4, 96, 128))).astype(np.float32)
        fov = np.zeros((96, 128), bool)
        fov[10:90, 10:120] = True
        out.append(Prepared(f"p{k}", x, np.zeros((96, 128), np.uint8), fov))
    return out


def test_running_statistics_become_the_new_photos_and_nothing_else_changes() -> None:
    torch.manual_seed(0)
    net = build_model(tiny_config().network).eval()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    seen: list[torch.Tensor] = []
    hook = bns[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    n = reestimate_batchnorm(net, _items(3.0), crop=64, crops_per_image=8, batch_size=4)
    hook.remove()
    assert n == len(bns) and not net.training and all(not m.training for m in net.modules())
    assert len(seen) == 4  # 16 crops in batches of 4
    expected = torch.stack([s.mean(dim=(0, 2, 3)) for s in seen]).mean(0)  # the cumulative average of batch means
    torch.testing.assert_close(bns[0].running_mean, expected, rtol=1e-4, atol=1e-5)
    assert all(m.momentum == 0.1 for m in bns)  # the training momentum is back
    for k, v in net.state_dict().items():
        if k in weights:
            torch.testing.assert_close(v, weights[k])  # weights untouched


def test_keep_blends_old_and_new_statistics() -> None:
    torch.manual_seed(0)
    net = build_model(tiny_config().network).eval()
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    old = bn.running_mean.clone()
    fresh = build_model(tiny_config().network).eval()
    fresh.load_state_dict(net.state_dict())
    reestimate_batchnorm(fresh, _items(3.0), crop=64, crops_per_image=8)
    new = next(m for m in fresh.modules() if isinstance(m, nn.BatchNorm2d)).running_mean
    reestimate_batchnorm(net, _items(3.0), crop=64, crops_per_image=8, keep=0.25)
    torch.testing.assert_close(bn.running_mean, 0.25 * old + 0.75 * new)


def test_frozen_batchnorm_keeps_its_statistics_through_training_mode() -> None:
    from lesionseg_training.adapt import freeze_batchnorm

    torch.manual_seed(0)
    net = build_model(tiny_config().network)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert freeze_batchnorm(net) == len(bns) > 0
    before = [m.running_mean.clone() for m in bns]
    net.train()  # what the trainer and validation call
    assert net.training and not any(m.training for m in bns)
    out = net(torch.randn(2, 4, 64, 64) * 5 + 3).logits
    out.mean().backward()
    for m, b in zip(bns, before):
        torch.testing.assert_close(m.running_mean, b)
    assert bns[0].weight.grad is not None  # scale and shift still learn


def _changed(before: dict[str, torch.Tensor], model_dir) -> set[str]:
    from napari_lesionseg.core.model_folder import load_model_folder

    after = dict(load_model_folder(model_dir).net.named_parameters())
    return {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}


def test_train_only_changes_exactly_the_parts_it_names(tmp_path, tiny_model_dir, small_pairs) -> None:
    """A fine-tune with ``train_only`` changes those parameters and no other (the rest do not
    even get gradients); "all" changes encoder and decoder alike."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    base = {n: p.detach().clone() for n, p in load_model_folder(tiny_model_dir).net.named_parameters()}
    bn = {n for n in base if ".body." in n and n.split(".")[-2] == "1"}  # DoubleConv: conv (0), BatchNorm (1)
    early = {n for n in base if n.startswith(("down.0.", "down.1."))}
    encoder = {n for n in base if n.startswith("down.")}
    got = {}
    for which in ("all", "decoder", "early", "norm"):
        out = tmp_path / which
        budget = Budget(steps=3, train_only=which, replay_share=0.0, lr=1e-2, keep_base_if_better=False)
        run_to_end(fine_tune(tiny_model_dir, pairs, budget, out))
        got[which] = _changed(base, out)
    assert got["all"] & encoder and got["all"] - encoder
    assert got["decoder"] and not got["decoder"] & encoder
    assert got["early"] and got["early"] <= early
    assert got["norm"] and got["norm"] <= bn


def test_train_only_refuses_what_it_does_not_know() -> None:
    import pytest

    from lesionseg_training.adapt import trainable
    from lesionseg_training.train_config import RunConfig
    from napari_lesionseg.core.dataclass_io import ConfigError

    with pytest.raises(ConfigError, match="run.train_only"):
        RunConfig(train_only="stem")
    with pytest.raises(ConfigError, match="freeze_encoder"):
        RunConfig(train_only="norm", freeze_encoder=True)
    with pytest.raises(ValueError, match="early"):
        trainable(nn.Conv2d(1, 1, 1), "early", "no_such_arch")


def test_finetune_command_defaults_are_the_budget_defaults() -> None:
    """``lesionseg finetune`` with no option (what the plugin's button runs, adding only
    ``--minutes``) fine-tunes exactly as ``fine_tune(Budget())`` does."""
    import argparse

    from lesionseg_training.cli import add_finetune_parser, budget_from_args
    from lesionseg_training.finetune import Budget

    parser = argparse.ArgumentParser()
    add_finetune_parser(parser.add_subparsers())
    args = parser.parse_args(["finetune", "--images", "i", "--masks", "m", "--out", "o"])
    assert budget_from_args(args) == Budget()
    args = parser.parse_args(["finetune", "--images", "i", "--masks", "m", "--out", "o", "--guard-margin", "0.02"])
    assert budget_from_args(args) == Budget(guard_margin=0.02)
    args = parser.parse_args(["finetune", "--images", "i", "--masks", "m", "--out", "o", "--blend", "0.5"])
    assert budget_from_args(args) == Budget(blend=0.5)
    args = parser.parse_args(["finetune", "--images", "i", "--masks", "m", "--out", "o", "--blend", "0"])
    assert budget_from_args(args) == Budget(blend=0.0) != Budget()  # the fine-tune's own weights


def test_blend_states_mixes_weights_and_keeps_counters() -> None:
    """``blend_states``: the share of the base plus the rest of the tuned weights; integer
    buffers (BatchNorm's counters) are the tuned network's; other networks and shares refused."""
    import torch

    from lesionseg_training.finetune import blend_states

    base = {"w": torch.zeros(3), "n": torch.tensor(7)}
    tuned = {"w": torch.tensor([4.0, 8.0, -4.0]), "n": torch.tensor(9)}
    got = blend_states(base, tuned, 0.25)
    assert torch.equal(got["w"], torch.tensor([3.0, 6.0, -3.0])) and int(got["n"]) == 9
    assert torch.equal(blend_states(base, tuned, 1.0)["w"], base["w"])
    assert torch.equal(blend_states(base, tuned, 0.0)["w"], tuned["w"])
    with pytest.raises(ValueError, match="differ"):
        blend_states({"v": torch.zeros(3)}, tuned, 0.5)
    with pytest.raises(ValueError, match="0-1"):
        blend_states(base, tuned, 1.5)


def test_a_blended_fine_tune_lies_between_the_base_and_the_tuned_weights(tmp_path, tiny_model_dir, small_pairs) -> None:
    """``Budget.blend``: the new version's weights are the share of the base's plus the rest of
    the checkpoint the same run chose (the run itself unchanged), and its metrics say so."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    base = dict(load_model_folder(tiny_model_dir).net.named_parameters())
    outs = {}
    for blend in (None, 0.5):
        outs[blend] = out = tmp_path / f"blend_{blend}"
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(steps=3, lr=1e-2, replay_share=0.0, keep_base_if_better=False,
                                                           blend=blend), out, threads=1))
    plain, blended = (dict(load_model_folder(outs[b]).net.named_parameters()) for b in (None, 0.5))
    moved = [n for n in base if not torch.equal(base[n], plain[n])]
    assert moved  # the run changed weights, so the blend has something to mix
    for n in moved:
        torch.testing.assert_close(blended[n], 0.5 * (base[n] + plain[n]), rtol=1e-5, atol=1e-6)
    m = load_model_folder(outs[0.5]).metrics
    assert m["blend"]["base_share"] == 0.5 and m["best_step"] == load_model_folder(outs[None]).metrics["best_step"]
    with pytest.raises(ValueError, match="0-1"):
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(steps=1, blend=2.0), tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_the_base_model_is_kept_when_no_checkpoint_beats_it(tmp_path, tiny_model_dir, small_pairs, monkeypatch) -> None:
    """``keep_base_if_better``: the starting weights are validated as step 0; when every later
    checkpoint scores lower on the held-out pairs, the new version has the base's weights and
    says best_step 0; without it the run's best checkpoint is taken whatever it scores."""
    import lesionseg_training.trainer as trainer
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    real = trainer.validate
    calls = []

    def declining(*args, **kwargs):  # the first validation scores best, every later one lower
        got = real(*args, **kwargs)
        calls.append(1)
        return {**got, "val_aupr": 1.0 / len(calls)}

    monkeypatch.setattr(trainer, "validate", declining)
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    base = {n: p.detach().clone() for n, p in load_model_folder(tiny_model_dir).net.named_parameters()}
    for keep in (True, False):
        calls.clear()
        out = tmp_path / f"keep_{keep}"
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(steps=4, lr=1e-2, replay_share=0.0,
                                                           keep_base_if_better=keep), out))
        m = load_model_folder(out)
        assert m.metrics["best_step"] == (0 if keep else 1)
        assert bool(_changed(base, out)) is not keep


def test_a_time_budget_stops_at_max_steps(tmp_path, tiny_model_dir, small_pairs) -> None:
    """With only a time budget (the button), the fine-tune stops after ``max_steps`` even with
    time left (``max_steps`` 0 or None fills the time: not run here, it would take the whole budget)."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    budget = Budget(minutes=5.0, max_steps=3, replay_share=0.0)
    run_to_end(fine_tune(tiny_model_dir, pairs, budget, tmp_path / "capped"))
    assert load_model_folder(tmp_path / "capped").metrics["steps"] == 3


def test_the_clicks_budget_counts_from_the_click(tmp_path, tiny_model_dir, small_pairs, monkeypatch) -> None:
    """The button's minutes are the whole click's, but they were counted from when the fine-tune
    began, after its process had started and imported torch (1.5-4 s on two cores: one click took
    118 s of its 120 on an AVX2 VM): training now gets what is left counted from ``started_at``,
    which ``finetune`` sets to its process's start."""
    import time
    import types

    from lesionseg_training import finetune
    from lesionseg_training.cli import process_started
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    given = {}
    # the fine-tune's clock stands still, so scoring the old model takes no time in either run
    # (on a busy machine the two runs' scoring took 12 and 21 s, and the budget subtracts it)
    now = time.time()
    monkeypatch.setattr(finetune, "time", types.SimpleNamespace(time=lambda: now))
    for name, started in (("now", None), ("earlier", now - 30.0)):
        events: list[dict] = []
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(minutes=1.0, steps=1, replay_share=0.0, started_at=started),
                             tmp_path / name), events.append)
        given[name] = next(e["seconds"] for e in events if e.get("event") == "training_budget")
    assert given["now"] - given["earlier"] == pytest.approx(30.0, abs=0.2), given
    monkeypatch.undo()
    if process_started(max_age=1e9) is None:
        pytest.skip("no /proc: the process's start is not known here")
    import subprocess
    import sys

    age = subprocess.run([sys.executable, "-c", "import time; from lesionseg_training.cli import process_started; "
                          "time.sleep(1.5); print(time.time() - process_started())"],
                         capture_output=True, text=True, check=True).stdout
    assert 1.5 <= float(age) < 20.0, age  # the sleep and the imports: counted from the process's start


def test_a_queue_walk_corrects_round_the_regions_shown_only() -> None:
    """benchmarks/adapt.py's simulated annotator: the first region of the queue is set to the
    truth round it, a region further down stays as the model drew it (or unsure)."""
    from types import SimpleNamespace

    from helpers import benchmark_module
    from napari_lesionseg.core.model_config import ReviewConfig

    adapt = benchmark_module("adapt")
    h, w = 200, 300
    prob = np.zeros((h, w), np.float32)
    mask = np.zeros((h, w), np.uint8)
    truth = np.zeros((h, w), np.uint8)
    mask[20:40, 20:40] = 1  # a false alarm, the likelier mistake (lower probability)
    prob[20:40, 20:40] = 0.55
    mask[150:170, 220:240] = 1  # a lesion found, the mask one pixel row too tall
    prob[150:170, 220:240] = 0.95
    truth[151:170, 220:240] = 1
    truth[100:110, 100:110] = 1  # a miss with no probability: no region shows it
    pred = SimpleNamespace(mask=mask, probability=prob, fuzzy=np.zeros((h, w), np.float32), threshold=0.5,
                           review=ReviewConfig(false_alarm_rate=[[0.5, 1.0], [0.9, 0.1]],
                                               missed_rate=[[0.0, 0.5], [0.1, 0.1]]))
    one = adapt.queue_corrected(pred, truth, 1)
    assert not one[20:40, 20:40].any()  # deleted: shown first
    assert one[150, 220:240].all() and one[151:170, 220:240].all()  # not shown: as the model drew it
    assert not one[100:110, 100:110].any()  # never shown, never painted
    both = adapt.queue_corrected(pred, truth, 2)
    assert not both[150].any() and both[151:170, 220:240].all()  # shown: set to the truth round it
    unsure = adapt.queue_corrected(pred, truth, 1, unsure_rest=True)
    assert (unsure[150:170, 220:240] == 255).all() and not unsure[20:40, 20:40].any()
    assert set(np.unique(unsure)) == {0, 255}


def test_queue_corrections_are_label_maps_of_the_base_models_own_masks(tmp_path, tiny_model_dir, small_pairs) -> None:
    """adapt.py --corrections queue: each photo's base-model prediction walked, written as a
    label map the fine-tune reads (0 / 1 / 255) at the photo's size."""
    from PIL import Image

    from helpers import benchmark_module
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.pairs import match_pairs

    adapt = benchmark_module("adapt")
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    truth_px, shapes = 0, {}
    for p in match_pairs(small_pairs / "images", small_pairs / "masks"):
        rgb, _ = read_image(p.image)
        m = p.read_mask(rgb.shape[:2])
        Image.fromarray(rgb).save(images / f"{p.id}.png")
        Image.fromarray(np.where(m == 1, 255, 0).astype(np.uint8)).save(masks / f"{p.id}.png")
        truth_px, shapes[p.id] = truth_px + int((m == 1).sum()), rgb.shape[:2]
    pairs, agree = adapt._queue_pairs(tiny_model_dir, (images, masks), sorted(shapes), tmp_path / "labels", 20, True)
    assert [p.id for p in pairs] == sorted(shapes) and all(p.label_map for p in pairs)
    for p in pairs:
        lab = p.read_mask()
        assert lab.shape == shapes[p.id] and set(np.unique(lab).tolist()) <= {0, 1, 255}
    assert agree["lesion_px_truth"] == truth_px and agree["lesion_px_kept"] <= truth_px
