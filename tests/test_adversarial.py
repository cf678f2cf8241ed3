"""Training with adversaries, dynamic gates and SGDC edge loss: the training-side properties of
METHODS.md 1.7, 3.7 and 4.6, and a smoke run of every small preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lesionseg_training.adversary import Adversary, edge_target
from lesionseg_training.train_config import load_config
from lesionseg_training.trainer import GATE_PARAM, make_optimizer, train, train_one_step
from napari_lesionseg.core.dataclass_io import ConfigError
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.models import build_model


def _batch(cfg, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, s, c = cfg.data.batch_size, cfg.data.crop_size, cfg.model.network.in_channels
    x = rng.standard_normal((b, c, s, s)).astype(np.float32)
    y = np.zeros((b, s, s), np.uint8)
    y[:, s // 4: s // 2, s // 4: s // 2] = 1
    x[:, 0][y == 1] -= 2.0
    return x, y


def _setup(preset: str, *overrides: str):
    torch.manual_seed(0)
    cfg = load_config(preset, list(overrides))
    net = build_model(cfg.model.network).train()
    params = [p for n, p in net.named_parameters() if not n.endswith(GATE_PARAM)]
    opt = make_optimizer(params, cfg.optim)
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels) if cfg.adversary.type != "none" else None
    return cfg, net, opt, adv


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", ["dynsegnet_small", "segan_small", "sgdc_small"])
def test_small_presets_two_iterations(preset: str) -> None:
    cfg, net, opt, adv = _setup(preset)
    x, y = _batch(cfg)
    g0 = _snapshot(net)
    d0 = _snapshot(adv.net) if adv else None
    for _ in range(2):
        logs = train_one_step(net, opt, x, y, cfg, adv)
        assert all(np.isfinite(v) for v in logs.values()), logs
    g1 = _snapshot(net)
    assert any(not torch.equal(g0[k], g1[k]) for k in g0 if "weight" in k)
    if adv is not None:
        d1 = _snapshot(adv.net)
        assert any(not torch.equal(d0[k], d1[k]) for k in d0)
        assert "adv" in logs and "d_loss" in logs
    if preset == "sgdc_small":
        assert "edge" in logs


def test_discriminator_step_leaves_generator_alone() -> None:
    cfg, net, opt, adv = _setup("dynsegnet_small")
    x, y = _batch(cfg)
    xt = torch.from_numpy(x)
    g0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    p = torch.sigmoid(net(xt).logits)
    adv.step_d(xt, torch.from_numpy(y), p.detach())
    assert all(torch.equal(g0[k], v) for k, v in net.named_parameters())
    assert all(prm.grad is None or prm.grad.abs().sum() == 0 for prm in net.parameters())


def test_gates_are_outside_the_optimizer_and_move_by_at_most_eta_clip() -> None:
    cfg, net, opt, adv = _setup("dynsegnet_small")
    gates = net.gate_logits
    assert gates is not None and gates.numel() == 13
    assert all(gates is not p for g in opt.param_groups for p in g["params"])
    x, y = _batch(cfg)
    before = gates.detach().clone()
    assert np.isfinite(train_one_step(net, opt, x, y, cfg, adv)["loss"])
    delta = gates.detach() - before
    dyn = cfg.model.network.dynamic
    assert 0 < delta.abs().max() <= dyn.eta * dyn.clip + 1e-7


def test_gate_update_equals_minus_eta_times_autograd() -> None:
    cfg, net, opt, adv = _setup("dynsegnet_small")
    x, y = _batch(cfg)
    xt, yt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last), torch.from_numpy(y)
    # the trainer steps D first, then takes dL_adv/da with the stepped D: do the same by hand
    net_copy = build_model(cfg.model.network).train()
    net_copy.load_state_dict(net.state_dict())
    adv_copy = Adversary(cfg.adversary, cfg.model.network.in_channels)
    adv_copy.net.load_state_dict(adv.net.state_dict())
    adv_copy.opt.load_state_dict(adv.opt.state_dict())
    torch.manual_seed(3)
    rng_state = torch.get_rng_state()
    out = net_copy(xt)
    p = torch.sigmoid(out.logits)
    adv_copy.step_d(xt, yt, p.detach())
    adv_copy.freeze(True)
    expected_grad = torch.autograd.grad(adv_copy.g_loss(xt, yt, p), out.gates)[0]
    torch.set_rng_state(rng_state)
    before = net.gate_logits.detach().clone()
    train_one_step(net, opt, x, y, cfg, adv)
    eta, clip = cfg.model.network.dynamic.eta, cfg.model.network.dynamic.clip
    torch.testing.assert_close(net.gate_logits.detach() - before, -eta * expected_grad.clamp(-clip, clip),
                               rtol=1e-4, atol=1e-7)


def test_gates_frozen_with_eta_zero_and_under_pure_supervision() -> None:
    cfg, net, opt, adv = _setup("dynsegnet_small", "model.network.dynamic.eta=0.0")
    x, y = _batch(cfg)
    before = net.gate_logits.detach().clone()
    train_one_step(net, opt, x, y, cfg, adv)
    assert torch.equal(net.gate_logits.detach(), before)
    cfg2, net2, opt2, _ = _setup("dynsegnet_small")
    before = net2.gate_logits.detach().clone()
    train_one_step(net2, opt2, x, y, cfg2, None)  # a pure L_seg step
    assert torch.equal(net2.gate_logits.detach(), before)


def test_literal_mode_runs_and_changes_decoder() -> None:
    cfg, net, opt, adv = _setup("dynsegnet_small", "model.network.dynamic.mode=\"literal\"")
    assert net.gate_logits is None
    x, y = _batch(cfg)
    assert np.isfinite(train_one_step(net, opt, x, y, cfg, adv)["loss"])


def test_segan_critic_step_clamps_and_segmentor_step_spares_critic() -> None:
    cfg, net, opt, adv = _setup("segan_small")
    x, y = _batch(cfg)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    p = torch.sigmoid(net(xt).logits)
    loss_c = adv.d_loss(xt, yt, p.detach())
    loss_s = adv.g_loss(xt, yt, p)
    torch.testing.assert_close(loss_c, -loss_s.detach())  # L_C = -L
    adv.step_d(xt, yt, p.detach())
    c = cfg.adversary.segan_critic.clamp
    assert all(prm.abs().max() <= c + 1e-7 for prm in adv.net.parameters())
    assert all(prm.grad is None or prm.grad.abs().sum() == 0 for prm in net.parameters())
    crit = {k: v.detach().clone() for k, v in adv.net.named_parameters()}  # BN statistics may move (as in SegAN's code)
    adv.freeze(True)
    out = net(xt)
    l_s = adv.g_loss(xt, yt, torch.sigmoid(out.logits))
    opt.zero_grad()
    l_s.backward()
    opt.step()
    adv.freeze(False)
    assert all(torch.equal(crit[k], v) for k, v in adv.net.named_parameters())


def test_edge_target() -> None:
    y = torch.zeros(1, 16, 16, dtype=torch.uint8)
    assert edge_target(y).sum() == 0
    assert edge_target(torch.ones_like(y)).sum() == 0
    y[0, 5:10, 5:10] = 1
    e = edge_target(y)[0, 0]
    assert e.sum() > 0 and e[7, 7] == 0 and e[0, 0] == 0 and e[5, 5] == 1 and e[4, 5] == 1


def test_impossible_combinations_refused() -> None:
    with pytest.raises(ConfigError, match="needs an adversary"):
        load_config("dynsegnet_small", ['adversary.type="none"'])
    with pytest.raises(ConfigError, match="SGDC needs"):
        load_config("tiny", ["model.network.sgdc.enabled=true"])
    with pytest.raises(ConfigError, match="nothing to learn"):
        load_config("segan_small", ['adversary.type="none"', "loss.dice_weight=0"])


def test_adversarial_run_writes_a_loadable_model(tmp_path: Path, small_pairs: Path) -> None:
    cfg = load_config("segan_small", [f'data.images="{small_pairs / "images"}"',
                                      f'data.masks="{small_pairs / "masks"}"', "run.steps=2", "run.eval_every=2"])
    gen = train(cfg, tmp_path / "run")
    events = list(gen)
    assert events[-1]["event"] == "done"
    m = load_model_folder(tmp_path / "run" / "best")
    assert m.config.network.arch == "segan_segmentor"
