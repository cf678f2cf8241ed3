"""Training with adversaries, dynamic gates and SGDC edge loss: the training-side properties of
METHODS.md 1.7, 3.7 and 4.6, and a smoke run of every small preset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lesionseg_training.adversary import Adversary, edge_loss, edge_target, real_map
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
    assert edge_target(y)[0].sum() == 0
    assert edge_target(torch.ones_like(y))[0].sum() == 0
    y[0, 5:10, 5:10] = 1
    e, known = edge_target(y)
    e = e[0, 0]
    assert e.sum() > 0 and e[7, 7] == 0 and e[0, 0] == 0 and e[5, 5] == 1 and e[4, 5] == 1
    assert known.min() == 1
    y[0, 12:, 12:] = 255  # not annotated: neither edge nor background there
    e2, known = edge_target(y)
    assert known[0, 0, 14, 14] == 0 and known[0, 0, 11, 11] == 0 and known[0, 0, 5, 5] == 1
    assert torch.equal(e2[0, 0, :10, :10], e[:10, :10])


def test_edge_loss_ignores_unannotated_pixels() -> None:
    y = torch.zeros(1, 16, 16, dtype=torch.uint8)
    y[0, 4:8, 4:8] = 1
    logits = torch.full((1, 1, 4, 4), -5.0)
    base = float(edge_loss(logits, y))
    y2 = y.clone()
    y2[0, 10:, 10:] = 255
    logits2 = logits.clone()
    logits2[0, 0, 3, 3] = 5.0  # a confident edge claim inside the unannotated corner only
    assert float(edge_loss(logits2, y2)) == pytest.approx(float(edge_loss(logits, y2)), rel=0.02)
    assert float(edge_loss(logits2, y)) > base  # ... which costs where the corner is annotated


@pytest.mark.parametrize("preset", ["dynsegnet_small", "segan_small"])
def test_unannotated_pixels_carry_no_adversarial_signal(preset: str) -> None:
    """Where the mask is 255 (not annotated) the 'real' map is the generator's own map, so the
    discriminator cannot tell them apart there and the generator is not pushed towards 0."""
    torch.manual_seed(0)
    cfg = load_config(preset)
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels)
    x, y = _batch(cfg)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    s = y.shape[-1]
    yt[:, s // 2:] = 255  # the lower half not annotated
    p = torch.rand(x.shape[0], 1, s, s)
    gt = real_map(yt, p)
    assert torch.equal(gt[:, :, s // 2:], p[:, :, s // 2:])
    assert torch.equal(gt[:, :, : s // 2], (yt == 1).float()[:, None, : s // 2])
    with torch.no_grad():
        if preset == "segan_small":  # the critic sees the same masked image twice: no loss at all
            assert float(adv.g_loss(xt, torch.full_like(yt, 255), p)) == 0.0
        else:  # real and fake inputs are the same image: the same score (eval: spectral norm's power
            adv.net.eval()  # iteration would move between two forward passes)
            torch.testing.assert_close(adv.net(xt, real_map(torch.full_like(yt, 255), p)), adv.net(xt, p))


@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge"])
def test_discriminator_learns_to_tell_real_from_fake(loss: str) -> None:
    """The direction of d_loss: a few discriminator steps raise its score of the annotation over
    the generator's map (swapping the targets in d_loss makes this fail)."""
    torch.manual_seed(0)
    cfg = load_config("dynsegnet_small", [f'adversary.patchgan.loss="{loss}"', "adversary.optimizer.lr=1e-3"])
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels)
    x, y = _batch(cfg)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    fake = torch.full((x.shape[0], 1, *y.shape[1:]), 0.3)  # a blurry, unsure map
    real = (yt == 1).float()[:, None]
    for _ in range(15):
        adv.step_d(xt, yt, fake)
    with torch.no_grad():
        assert float(adv.net(xt, real).mean()) > float(adv.net(xt, fake).mean())
    with torch.no_grad():
        assert float(adv.g_loss(xt, yt, fake)) > float(adv.g_loss(xt, yt, real))  # the generator is rewarded for looking real


def test_segan_critic_maximises_the_difference() -> None:
    torch.manual_seed(0)
    cfg = load_config("segan_small", ["adversary.optimizer.lr=1e-3"])
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels)
    x, y = _batch(cfg)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    fake = torch.full((x.shape[0], 1, *y.shape[1:]), 0.3)
    adv.step_d(xt, yt, fake)  # the first step clamps the initial weights (a drop of its own)
    with torch.no_grad():
        before = float(adv.g_loss(xt, yt, fake))
    for _ in range(10):
        adv.step_d(xt, yt, fake)
    with torch.no_grad():
        assert float(adv.g_loss(xt, yt, fake)) > before * 1.02


def test_clamp_spares_batchnorm_only_when_asked() -> None:
    cfg = load_config("segan_small", ["adversary.segan_critic.clamp_bn=false"])
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels)
    with torch.no_grad():
        for prm in adv.net.parameters():
            prm.fill_(1.0)
    adv.after_d_step()
    c = cfg.adversary.segan_critic.clamp
    for module in adv.net.modules():
        for prm in module.parameters(recurse=False):
            bn = isinstance(module, torch.nn.BatchNorm2d)
            assert float(prm.max()) == (1.0 if bn else pytest.approx(c)), module


def test_segan_code_critic_is_the_released_one() -> None:
    cfg = load_config("segan_code")
    c = cfg.adversary.segan_critic
    assert (c.layout, c.weighting, c.clamp) == ("code", "concat_code", 0.05)
    adv = Adversary(cfg.adversary, 3)
    convs = [m for m in adv.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.kernel_size[0] for m in convs] == [7, 5, 4, 4, 4, 3] and all(m.stride == (2, 2) for m in convs)
    feats = adv.net.features(torch.randn(1, 3, 128, 128))
    assert len(feats) == 7 and feats[-1].shape[-1] == 2


def test_imagegan_judges_the_whole_image() -> None:
    from napari_lesionseg.core.models.discriminators import ImageGAN

    torch.manual_seed(0)
    d = ImageGAN(4, 8, 3, True).eval()
    x, m = torch.randn(2, 3, 128, 128), torch.rand(2, 1, 128, 128)
    assert d(x, m).shape == (2, 1)
    # one decision from pooled features through a nonlinearity (a linear head after pooling
    # would be the mean of per-patch scores, i.e. the PatchGAN again)
    kinds = (torch.nn.Linear, torch.nn.LeakyReLU, torch.nn.Linear)
    assert len(d.mlp) == 3 and all(isinstance(mod, k) for mod, k in zip(d.mlp, kinds))
    grad_x = x.clone().requires_grad_(True)
    d(grad_x, m).sum().backward()
    assert all(float(grad_x.grad[:, :, r, c].abs().sum()) > 0 for r in (0, -1) for c in (0, -1))


def _ddp_single_rank(tmp_path: Path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    return dist


_TWO_RANKS = """
import sys, torch, torch.distributed as dist
from lesionseg_training.adversary import Adversary
from lesionseg_training.distributed import module_digest
from lesionseg_training.train_config import load_config
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2)
torch.manual_seed(100 + rank)  # left alone, each rank would build a discriminator of its own
cfg = load_config(sys.argv[3])
print(module_digest(Adversary(cfg.adversary, cfg.model.network.in_channels).net))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("preset", ["dynsegnet_small", "segan_small"])
def test_two_ranks_start_from_one_discriminator(tmp_path: Path, preset: str) -> None:
    """DDP does not wrap the discriminator: under torchrun it is rank 0's on every rank from the
    start (then kept so by averaging its gradients), even when the ranks' random streams differ."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    init = f"file://{tmp_path / 'pg'}"
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_RANKS, str(r), init, preset], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1]


def test_literal_step_descends_the_adversarial_loss_by_eta_times_the_clipped_gradient() -> None:
    """``W <- W - eta * g / max(1, |g|)``: downhill on the loss whose gradient it is given."""
    from lesionseg_training.trainer import literal_adaptation_step

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    small = torch.nn.Parameter(torch.tensor([0.5]))
    loss = (w ** 2).sum() + (small ** 2).sum()
    gw, gs = torch.autograd.grad(loss, [w, small])  # (2, -4) and (1,): norm sqrt(21) > 1, clipped to 1
    norm = literal_adaptation_step([(w, gw), (small, gs)], eta=0.1)
    assert norm == pytest.approx(21 ** 0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0]) - 0.1 * gw / 21 ** 0.5)
    torch.testing.assert_close(small.detach(), torch.tensor([0.5]) - 0.1 * gs / 21 ** 0.5)
    assert float((w ** 2).sum() + (small ** 2).sum()) < float(loss)
    v = torch.nn.Parameter(torch.tensor([0.1]))
    literal_adaptation_step([(v, torch.tensor([0.2]))], eta=0.5)  # a gradient below norm 1 is not scaled up
    torch.testing.assert_close(v.detach(), torch.tensor([0.0]))


def test_literal_step_moves_only_the_decoder_even_under_ddp(tmp_path: Path) -> None:
    """The literal adaptation updates the decoder (residual blocks, attention gates), also when
    the network is wrapped in DDP, from the step's own forward pass (BatchNorm counts one)."""
    cfg, net, opt, adv = _setup("dynsegnet_small", 'model.network.dynamic.mode="literal"')
    cfg0, net0, opt0, adv0 = _setup("dynsegnet_small", 'model.network.dynamic.mode="literal"',
                                    "model.network.dynamic.eta=0.0")
    x, y = _batch(cfg)
    dist = _ddp_single_rank(tmp_path)
    try:
        model = torch.nn.parallel.DistributedDataParallel(net)
        model0 = torch.nn.parallel.DistributedDataParallel(net0)
        torch.manual_seed(1)  # the same dropout masks in both
        logs = train_one_step(model, opt, x, y, cfg, adv)
        torch.manual_seed(1)
        train_one_step(model0, opt0, x, y, cfg0, adv0)
    finally:
        dist.destroy_process_group()
    assert logs["literal_norm"] > 0
    a, b = dict(net.named_parameters()), dict(net0.named_parameters())
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(k.split(".")[0] in ("blocks", "gates") for k in moved)
    assert any(k.startswith("blocks") for k in moved)
    counts = {int(m.num_batches_tracked) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert counts == {1}
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
