"""DALE (METHODS.md 2.8 unit-test properties) and a short DALE run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesionseg_training.dale import Dale, border_band, omega_star, w2_squared, weighted_moments
from lesionseg_training.data import Prepared
from lesionseg_training.losses import supervised_loss
from lesionseg_training.train_config import DaleConfig, LossConfig, load_config
from lesionseg_training.trainer import train
from napari_lesionseg.core.fuzzy import binary_entropy, fuzzy_membership
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.models.output import SegOutput


def test_membership_properties() -> None:
    y = np.array([1, 0, 1, 0], np.float32)
    p = np.array([0.999, 0.001, 0.999, 0.001], np.float32)
    er = np.abs((p > 0.5) - y)
    assert fuzzy_membership(binary_entropy(p), er, 0.5, 0.3, 0.2).max() == 0.0
    half = np.full(4, 0.5, np.float32)
    assert (fuzzy_membership(binary_entropy(half), np.zeros(4), 0.5, 0.3, 0.2) == 1.0).all()
    ae = np.linspace(0, 1, 50)
    f_ae = fuzzy_membership(ae, np.zeros(50), 0.5, 0.3, 0.2)
    f_er = fuzzy_membership(np.zeros(50), ae, 0.5, 0.3, 0.2)
    assert (np.diff(f_ae) >= 0).all() and (np.diff(f_er) >= 0).all()
    assert f_ae.min() >= 0 and f_ae.max() <= 1


def test_omega_star() -> None:
    assert omega_star(2.0, 0.2, 0.3) == pytest.approx(1 / 18)
    assert omega_star(0.2, 0.1, 0.3) == 1.0  # label loss below the reference: trust the label
    assert omega_star(100.0, 0.1, 0.2) < 0.002  # label loss far above, prediction loss below
    assert omega_star(0.5, 0.5, 0.1) == 1.0
    for a, b, r in np.random.default_rng(0).random((100, 3)) * 3:
        assert 0.0 <= omega_star(a, b, r) <= 1.0


def test_w2_and_alignment_zero_when_stats_coincide() -> None:
    mu, sd = torch.randn(8), torch.rand(8) + 0.1
    mu2, sd2 = torch.randn(8), torch.rand(8) + 0.1
    assert float(w2_squared(mu, sd, mu, sd)) == 0.0
    assert float(w2_squared(mu, sd, mu2, sd2)) == pytest.approx(float(w2_squared(mu2, sd2, mu, sd)))
    assert float(w2_squared(mu, sd, mu2, sd2)) >= 0
    phi = torch.randn(1, 4, 8, 8)
    m, s, n = weighted_moments(phi, torch.ones(1, 8, 8))
    torch.testing.assert_close(m, phi.mean(dim=(0, 2, 3)))
    assert float(n) == 64



def test_w2_is_the_closed_form_for_diagonal_gaussians() -> None:
    """W2^2 between N(mu1, diag sd1^2) and N(mu2, diag sd2^2) is |mu1 - mu2|^2 + |sd1 - sd2|^2: the
    spread counts as much as the mean (features that collapse or scatter are misaligned too)."""
    mu = torch.tensor([0.5, -1.0, 2.0])
    assert float(w2_squared(mu, torch.tensor([1.0, 1.0, 1.0]), mu, torch.tensor([3.0, 1.0, 0.5]))) == pytest.approx(4.25)
    assert float(w2_squared(mu, torch.ones(3), mu + torch.tensor([1.0, 0.0, 2.0]), torch.full((3,), 2.0))) == pytest.approx(5.0 + 3.0)


def test_weighted_moments_match_centred_statistics_and_their_gradients() -> None:
    """The fast moments (batched products, E[x^2] - mu^2) against the textbook centred form, values
    and gradients, under a weight that leaves most pixels out (a fuzzy region)."""
    g = torch.Generator().manual_seed(0)
    phi = (torch.randn(3, 5, 12, 10, generator=g) * 2 + 3).requires_grad_(True)
    w = torch.rand(3, 12, 10, generator=g) * (torch.rand(3, 12, 10, generator=g) > 0.8)
    mu, sd, n = weighted_moments(phi, w)
    wn = w[:, None] / w.sum()
    mu_ref = (phi * wn).sum(dim=(0, 2, 3))
    sd_ref = torch.sqrt((((phi - mu_ref[None, :, None, None]) ** 2) * wn).sum(dim=(0, 2, 3)) + 1e-6)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sd, sd_ref, rtol=1e-4, atol=1e-4)
    assert float(n) == pytest.approx(float(w.sum()))
    (ga,) = torch.autograd.grad((mu.sum() + sd.sum()), phi)
    (gb,) = torch.autograd.grad((mu_ref.sum() + sd_ref.sum()), phi)
    torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-5)
    assert (ga[w[:, None].expand_as(ga) == 0] == 0).all()  # unweighted pixels get no gradient
    w2 = torch.rand(3, 12, 10, generator=g)
    mu_k, sd_k, n_k = weighted_moments(phi, torch.stack([w, w2], dim=1))  # two weights at once
    torch.testing.assert_close(mu_k[0], mu)
    torch.testing.assert_close(sd_k[1], weighted_moments(phi, w2)[1])
    assert float(n_k[1]) == pytest.approx(float(w2.sum()))


def test_weighted_moments_stay_exact_for_bf16_features_under_autocast() -> None:
    """Training runs in bf16 autocast: the moments of bf16 features whose mean is large against
    their spread (where E[x^2] - mu^2 cancels) match the fp32 moments of the same bf16 values."""
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(2, 4, 16, 16, generator=g) * 0.5 + 3.0
    w = (torch.rand(2, 16, 16, generator=g) > 0.7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        phib = F.conv2d(phi, torch.eye(4)[:, :, None, None])  # a bf16 activation, as the network's
        assert phib.dtype == torch.bfloat16
        mu, sd, _ = weighted_moments(phib, w)
    mu_ref, sd_ref, _ = weighted_moments(phib.float(), w)
    assert mu.dtype == torch.float32
    torch.testing.assert_close(mu, mu_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sd, sd_ref, rtol=1e-3, atol=1e-3)


def _band_reference(mask: np.ndarray, r: int) -> np.ndarray:
    """Every pixel's square window (clipped to the image) holds a mask and a non-mask pixel."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            win = mask[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
            out[y, x] = win.any() and not win.all()
    return out


def test_border_band_matches_its_definition_at_image_edges_and_around_small_lesions() -> None:
    rng = np.random.default_rng(3)
    for r in (1, 2, 3):
        for _ in range(5):
            m = np.zeros((23, 31), bool)
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, 23), rng.integers(0, 31)
                m[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = True
            np.testing.assert_array_equal(border_band(m, r), _band_reference(m, r))
    assert not border_band(np.zeros((9, 9), bool), 2).any()
    assert not border_band(np.ones((9, 9), bool), 2).any()  # no border inside the image


def _dale(items=None, **kw) -> Dale:
    items = items or [Prepared("a", np.zeros((1, 16, 16), np.float32), np.zeros((16, 16), np.uint8),
                               np.ones((16, 16), bool))]
    return Dale(DaleConfig(**kw), LossConfig(), items, total_steps=100)


def test_stable_phase_gives_zero_gradient_on_fuzzy_pixels() -> None:
    d = _dale()
    d.state.passes = d.cfg.min_passes
    z = torch.randn(2, 1, 8, 8, requires_grad=True)
    y = (torch.rand(2, 8, 8) > 0.5).to(torch.uint8)
    f = torch.zeros(2, 8, 8)
    f[:, :3] = 1.0
    step = d.warmup_end  # first stable step
    assert d.phase(step) == "stable"
    loss, _ = d.loss(SegOutput(z), y, f, np.array([0, 0]), step)
    loss.backward()
    assert (z.grad[:, 0, :3] == 0).all() and z.grad[:, 0, 3:].abs().sum() > 0


def test_phases_follow_a_time_budget() -> None:
    """With a wall-clock budget the run ends long before run.steps: the phases must follow the
    budget's progress, or DALE never leaves warm-up."""
    d = Dale(DaleConfig(warmup_frac=0.1, stable_frac=0.2, partition_every=40), LossConfig(),
             _dale().items, total_steps=100_000)
    for step in range(50):
        d.follow_budget(step, 0.05)  # 5 % of the time used
        assert d.phase(step) == "warmup" and not d.wants_partition(step)
    d.follow_budget(50, 0.1)  # 10 % of the time: warm-up ends here
    assert d.wants_partition(50) and d.phase(50) == "stable" and d.wants_partition(90)
    d.follow_budget(80, 0.3)  # 30 %: the alternating phase starts
    assert d.stable_end == 80 and {d.phase(s) for s in range(80, 84)} == {"stable", "fuzzy"}
    state = d.state_dict()
    again = Dale(d.cfg, LossConfig(), d.items, total_steps=100_000)
    again.load_state_dict(state)
    assert (again.warmup_end, again.stable_end) == (50, 80)


def test_dale_equals_standard_when_nothing_is_fuzzy() -> None:
    d = _dale(lambda_align=0.0)
    d.state.passes = d.cfg.min_passes
    z = torch.randn(2, 1, 8, 8)
    y = (torch.rand(2, 8, 8) > 0.7).to(torch.uint8)
    f = torch.zeros(2, 8, 8)
    std, _ = supervised_loss(z, y, LossConfig())
    for step in (d.warmup_end, d.stable_end + 1):  # a stable step and a fuzzy step
        loss, _ = d.loss(SegOutput(z, features=torch.randn(2, 4, 8, 8)), y, f, np.array([0, 0]), step)
        torch.testing.assert_close(loss, std)  # the fuzzy step: the standard loss, every target the label
    assert d.state.omega[0] == 1.0
    d = _dale(lambda_align=0.0, fuzzy_step="separate")
    d.state.passes = d.cfg.min_passes
    loss, _ = d.loss(SegOutput(z, features=torch.randn(2, 4, 8, 8)), y, f, np.array([0, 0]), d.stable_end + 1)
    torch.testing.assert_close(loss, d.cfg.lambda_keep * std)  # METHODS' form: L_f = 0 with no fuzzy pixel


def test_stable_statistics_get_no_gradient() -> None:
    d = _dale()
    phi = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = (torch.rand(2, 8, 8) > 0.5).to(torch.uint8)
    f = torch.rand(2, 8, 8)
    loss = d.align_loss(phi, y, (y == 1).float(), f)
    assert all(not t.requires_grad for t in list(d.state.stable_mu.values()) + list(d.state.stable_sd.values()))
    loss.backward()
    assert phi.grad is not None


def test_alignment_groups_fuzzy_pixels_by_their_corrected_label() -> None:
    """DALE aligns the unstable features of class c, c taken from the corrected label
    ``y_tilde`` (not the annotation), with the stable features of class c: fuzzy pixels the
    correction calls lesion, whose features look like the stable lesion pixels', are aligned
    already; grouped by their annotation (background) they would be pulled far off."""
    d = _dale(min_pixels=4.0)
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(1, 2, 8, 8, generator=g) * 0.1  # background features near 0
    y = torch.zeros(1, 8, 8, dtype=torch.uint8)
    y[0, :4, :4] = 1  # stable lesion pixels: features near 5
    phi[0, :, :4, :4] += 5.0
    f = torch.zeros(1, 8, 8)
    f[0, 4:, 4:] = 1.0  # a fuzzy region annotated background that looks like the lesion
    phi[0, :, 4:, 4:] += 5.0
    y_tilde = torch.zeros(1, 8, 8)
    y_tilde[0, 4:, 4:] = 1.0  # the correction calls it lesion
    by_correction = float(d.align_loss(phi, y, y_tilde, f))
    assert by_correction < 0.05  # 5 apart per channel would cost about 25
    d2 = _dale(min_pixels=4.0)
    by_annotation = float(d2.align_loss(phi, y, (y == 1).float(), f))  # the annotation as the correction
    assert by_annotation > 20.0


def test_partition_pass_is_eval_only() -> None:
    cfg = load_config("dale_small")
    net = build_model(cfg.model.network).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    items = [Prepared(str(i), rng.standard_normal((3, 64, 64)).astype(np.float32),
                      (rng.random((64, 64)) > 0.9).astype(np.uint8), np.ones((64, 64), bool)) for i in range(2)]
    d = Dale(replace(cfg.paradigm.dale, stats="passes"), cfg.loss, items, 10)
    frac = d.partition(net, cfg.model.network.stride)
    assert 0.0 <= frac <= 1.0 and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(0 <= f.min() and f.max() <= 1 for f in d.state.fuzzy)


def test_dale_run_end_to_end(tmp_path: Path, small_pairs: Path) -> None:
    cfg = load_config("dale_small", [f'data.images="{small_pairs / "images"}"',
                                     f'data.masks="{small_pairs / "masks"}"', "data.val_every=2"])
    events = list(train(cfg, tmp_path / "run"))
    kinds = [e["event"] for e in events]
    assert "partition" in kinds and kinds[-1] == "done"
    phases = {e.get("phase") for e in events if e["event"] == "step"}
    assert {0.0, 1.0, 2.0} <= phases
    load_model_folder(tmp_path / "run" / "best")


# ---- the method, not only its formulas: tests that fail when DALE is wrong --------------------
class _Fixed(torch.nn.Module):
    """A 'network' whose logits are fixed, to drive a partition pass."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.z = torch.nn.Parameter(torch.from_numpy(logits.astype(np.float32))[None, None], requires_grad=False)

    def forward(self, x: torch.Tensor) -> SegOutput:
        h, w = self.z.shape[-2:]
        return SegOutput(torch.nn.functional.pad(self.z, (0, x.shape[-1] - w, 0, x.shape[-2] - h)))


def _lesion_scene():
    """A 32x32 disc with two annotated lesions: one the model finds with unsure borders, one it
    misses entirely (confident background over the whole lesion)."""
    y = np.zeros((32, 32), np.uint8)
    y[4:12, 4:12] = 1  # found: p = 0.97 inside, 0.5 on the ring around it
    y[18:28, 18:28] = 1  # missed: p = 0.002 everywhere on it
    p = np.full((32, 32), 0.002, np.float32)
    p[3:13, 3:13] = 0.5
    p[5:11, 5:11] = 0.97
    z = np.log(p / (1 - p))
    item = Prepared("a", np.zeros((1, 32, 32), np.float32), y, np.ones((32, 32), bool))
    return item, z


def test_labels_enter_the_partition_and_a_missed_lesion_stays_supervised() -> None:
    item, z = _lesion_scene()
    d = Dale(DaleConfig(stats="passes"), LossConfig(), [item], total_steps=100)
    for _ in range(2):
        d.partition(_Fixed(z), stride=1)
    f = d.state.fuzzy[0]
    assert f[3:13, 3:13].max() == 1.0  # the unsure border ring of the found lesion is fuzzy
    assert f[20:26, 20:26].max() == 0.0  # the interior of the missed lesion is not: it keeps its label
    assert f[0, 31] == 0.0 and f[16, 16] == 0.0  # confident, agreeing background
    # another annotation of the same photo gives another partition
    other = Prepared("a", item.x, np.zeros_like(item.y), item.fov)  # nothing annotated
    d2 = Dale(DaleConfig(stats="passes"), LossConfig(), [other], total_steps=100)
    for _ in range(2):
        d2.partition(_Fixed(z), stride=1)
    assert not np.array_equal(d2.state.fuzzy[0], f)
    # with the paper's literal 'or' and no band, the missed lesion would be erased from training
    d3 = Dale(DaleConfig(combine="or", band_px=0, stats="passes"), LossConfig(), [item], total_steps=100)
    for _ in range(2):
        d3.partition(_Fixed(z), stride=1)
    assert d3.state.fuzzy[0][20:26, 20:26].min() == 1.0


@pytest.mark.parametrize("stats", ["passes", "online"])
def test_histories_are_moving_averages_weighted_to_the_past(stats: str) -> None:
    """AE and ER are histories: ``m * old + (1 - m) * new`` with ``hist_momentum = m`` (0.8
    here, so a swapped weighting shows; the default 0.5 cannot tell them apart)."""
    item, z = _lesion_scene()
    d = Dale(DaleConfig(stats=stats, hist_momentum=0.8), LossConfig(), [item], total_steps=100)
    z2 = np.zeros_like(z)  # then p = 0.5 everywhere: entropy at its top, every annotated pixel wrong
    where = np.arange(32 * 32).reshape(1, 32, 32)
    for k, zz in enumerate((z, z2)):
        if stats == "passes":
            d.partition(_Fixed(zz), stride=1)
        else:
            d.observe(torch.from_numpy(zz.astype(np.float32))[None, None], torch.from_numpy(item.y)[None],
                      np.array([0]), where, step=d.warmup_end + k)
    p1, p2 = (1 / (1 + np.exp(-zz.astype(np.float32))) for zz in (z, z2))
    ae = 0.8 * binary_entropy(p1) + 0.2 * binary_entropy(p2)
    er = 0.8 * ((p1 > 0.5) != (item.y == 1)) + 0.2 * ((p2 > 0.5) != (item.y == 1))
    np.testing.assert_allclose(d.state.ae[0], ae, atol=1e-5)
    np.testing.assert_allclose(d.state.er[0], er, atol=1e-6)


def test_fuzziness_stays_in_the_border_band() -> None:
    item, z = _lesion_scene()
    z = np.zeros_like(z)  # p = 0.5 everywhere: everything unsure, the label disagrees half the time
    d = Dale(DaleConfig(band_px=2, combine="or", stats="passes"), LossConfig(), [item], total_steps=100)
    d.partition(_Fixed(z), stride=1)
    f = d.state.fuzzy[0]
    assert f[15, 15] == 0.0 and f[0, 31] == 0.0 and f[8, 8] == 0.0  # >2 px from any lesion border
    assert f[4, 4] == 1.0 and f[3, 8] == 1.0
    empty = Prepared("b", item.x, np.zeros_like(item.y), item.fov)
    d = Dale(DaleConfig(band_px=2, combine="or", stats="passes"), LossConfig(), [empty], total_steps=100)
    d.partition(_Fixed(np.full_like(z, -6.0)), stride=1)
    assert d.state.fuzzy[0].max() == 0.0  # an all-background mask and no prediction: no band


def _fuzzy_step_setup(**kw):
    d = _dale(**kw)
    d.state.passes = d.cfg.min_passes
    step = d.stable_end + d.cfg.alternate_every  # a fuzzy step
    assert d.phase(step) == "fuzzy"
    y = torch.zeros(1, 8, 8, dtype=torch.uint8)
    y[0, :, :4] = 1  # left half annotated lesion
    z = torch.full((1, 1, 8, 8), -3.0)  # the model says background everywhere ...
    z[0, 0, :, 6:] = 3.0  # ... except the right edge, which is annotated background
    f = torch.zeros(1, 8, 8)
    f[0, :4] = 1.0  # the top half is fuzzy
    return d, step, y, z.requires_grad_(True), f


@pytest.mark.parametrize("form", ["blend", "separate"])
def test_fuzzy_step_pushes_the_right_pixels_the_right_way(form: str) -> None:
    d, step, y, z, f = _fuzzy_step_setup(omega_min=0.0, lambda_align=0.0, lambda_keep=0.0, fuzzy_step=form)
    d.state.omega[:] = 0.0  # labels not trusted at all in fuzzy regions
    loss, logs = d.loss(SegOutput(z), y, f, np.array([0]), step)
    loss.backward()
    g = z.grad[0, 0]
    assert (g[:4, :4] < 0).all()  # fuzzy annotated lesion: pushed up, never flipped to background
    assert (g[:4, 6:] < 0).all()  # fuzzy background the model calls lesion: follows the model
    if form == "separate":
        assert (g[4:] == 0).all()  # reliable pixels: not L_f's business (lambda_keep = 0)
    else:
        assert (g[4:, 6:] > 0).all()  # reliable background the model calls lesion: pushed down
    _, _, y_tilde = d.fuzzy_loss(z, y, f, 1 - f, np.array([0]))
    assert (y_tilde[0][y[0] == 1] == 1).all()
    # with full confidence in the labels, the same background pixels are pushed down
    d.state.omega[:] = 1.0
    d.cfg.omega_min = 1.0  # (omega is updated by the step itself; keep it at 1)
    z.grad = None
    loss, _ = d.loss(SegOutput(z), y, f, np.array([0]), step)
    loss.backward()
    assert (z.grad[0, 0, :4, 6:] > 0).all()



def test_doubting_positives_lowers_a_fuzzy_annotated_lesion_the_model_rejects_to_its_floor() -> None:
    """``protect_positives = false`` (the variant for loose outlines): a fuzzy annotated lesion pixel
    the model calls background gets the blend's target, never below the omega floor; outside the
    fuzzy region annotated lesions keep 1."""
    d, step, y, z, f = _fuzzy_step_setup(omega_min=0.5, lambda_align=0.0, protect_positives=False)
    d.state.omega[:] = 0.5
    blend, _ = d.label_blend(z.detach(), y, f, 1 - f, np.array([0]))
    assert blend[0, :4, :4].min() == pytest.approx(0.5)  # fuzzy, annotated, rejected: undecided
    assert blend[0, :4, :4].max() == pytest.approx(0.5)
    d.state.omega[:] = 0.0
    d.cfg.omega_min = 0.0
    loss, _ = d.loss(SegOutput(z), y, f, np.array([0]), step)
    loss.backward()
    assert (z.grad[0, 0, :4, :4] > 0).all()  # no floor, no trust: the model's "background" wins
    assert (z.grad[0, 0, 4:, :4] < 0).all()  # a reliable annotated lesion is still pushed up
    protected, *_ = _fuzzy_step_setup(omega_min=0.0, lambda_align=0.0)
    protected.state.omega[:] = 0.0
    blend, _ = protected.label_blend(z.detach(), y, f, 1 - f, np.array([0]))
    assert (blend[0][y[0] == 1] == 1).all()

def test_omega_moves_with_the_losses_and_keeps_its_floor() -> None:
    d, step, y, z, f = _fuzzy_step_setup(omega_min=0.3)
    z = z.detach()
    for _ in range(40):  # labelled background where the model is sure of a lesion: label loss high
        d.fuzzy_loss(z, y, f, 1 - f, np.array([0]))
    low = float(d.state.omega[0])
    assert 0.3 <= low < 0.5
    agree = torch.where(y[:, None] == 1, 3.0, -3.0)  # the model agrees with every label
    for _ in range(40):
        d.fuzzy_loss(agree, y, f, 1 - f, np.array([0]))
    assert float(d.state.omega[0]) > 0.95 > low
    d2, *_ = _fuzzy_step_setup(omega_min=0.6)
    for _ in range(40):
        d2.fuzzy_loss(z, y, f, 1 - f, np.array([0]))
    assert float(d2.state.omega[0]) == pytest.approx(0.6)


def test_fuzzy_map_unused_before_two_partition_passes() -> None:
    d, step, y, z, f = _fuzzy_step_setup(stats="passes")
    d.state.passes = 1
    loss, logs = d.loss(SegOutput(z), y, f, np.array([0]), step)
    std, _ = supervised_loss(z, y, LossConfig())
    torch.testing.assert_close(loss, std)
    assert logs["phase"] == 0.0


def test_ema_teacher_follows_the_network_slowly() -> None:
    cfg = load_config("dale_small")
    net = build_model(cfg.model.network)
    d = Dale(cfg.paradigm.dale, cfg.loss, _dale().items, 10)
    d.attach(net)
    assert d.teacher is not None and not any(p.requires_grad for p in d.teacher.parameters())
    before = [p.detach().clone() for p in d.teacher.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    d.after_step(net)
    k = 1 - cfg.paradigm.dale.teacher_decay
    for b, t in zip(before, d.teacher.parameters()):
        torch.testing.assert_close(t, b + k, rtol=0, atol=1e-5)
    again = Dale(cfg.paradigm.dale, cfg.loss, _dale().items, 10)
    again.attach(build_model(cfg.model.network))
    again.load_state_dict(d.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.teacher.parameters(), d.teacher.parameters()))


def test_partition_passes_follow_budget_fractions() -> None:
    d = Dale(DaleConfig(warmup_frac=0.1, stable_frac=0.2, partition_every_frac=0.2), LossConfig(),
             _dale().items, total_steps=100_000)
    passes = []
    for step in range(1000):
        d.follow_budget(step, step / 1000)
        if d.wants_partition(step):
            passes.append(step)
    assert passes == [100, 301, 502, 703, 904]  # 0.2 of the budget after each pass ended


def test_a_slow_partition_pass_does_not_trigger_the_next() -> None:
    """The next pass is due a fraction after the previous one ended, however long it took."""
    d = Dale(DaleConfig(warmup_frac=0.1, stable_frac=0.2, partition_every_frac=0.2), LossConfig(),
             _dale().items, total_steps=100_000)
    passes, progress = [], 0.0
    for step in range(600):
        d.follow_budget(step, progress)
        if d.wants_partition(step):
            passes.append(step)
            progress += 0.25  # a pass that takes a quarter of the budget
        progress += 0.001
    assert passes == [100, 301, 502]


def test_crops_know_where_their_pixels_come_from() -> None:
    """The sampler's source-pixel map survives flips and rotations: looking the crop's pixels up
    in the image gives back the crop's labels (what DALE's online statistics rely on)."""
    from lesionseg_training.data import PatchSampler
    from lesionseg_training.train_config import DataConfig

    rng = np.random.default_rng(0)
    items = [Prepared(str(i), rng.standard_normal((3, 40, 52)).astype(np.float32),
                      rng.integers(0, 2, (40, 52)).astype(np.uint8), np.ones((40, 52), bool)) for i in range(2)]
    sampler = PatchSampler(items, DataConfig(crop_size=24, batch_size=16), seed=1)
    for _ in range(3):
        _, y = sampler.batch()
        for b, i in enumerate(sampler.last_idx):
            where = sampler.last_where[b]
            inside = where >= 0
            assert inside.any()
            np.testing.assert_array_equal(items[i].y.reshape(-1)[where[inside]], y[b][inside])


def test_online_statistics_build_the_partition_without_a_forward_pass() -> None:
    item, z = _lesion_scene()
    d = Dale(DaleConfig(), LossConfig(), [item], total_steps=100)
    assert d.cfg.stats == "online"
    where = np.arange(32 * 32).reshape(1, 32, 32)
    logits = torch.from_numpy(z.astype(np.float32))[None, None]
    y = torch.from_numpy(item.y)[None]
    d.observe(logits, y, np.array([0]), where, step=d.warmup_end)
    assert d.partition(None, stride=1) == 0.0  # one observation per pixel is not enough
    d.observe(logits, y, np.array([0]), where, step=d.warmup_end + 1)
    d.partition(None, stride=1)
    f = d.state.fuzzy[0]
    assert f[3:13, 3:13].max() == 1.0 and f[20:26, 20:26].max() == 0.0 and f[0, 31] == 0.0
    before = [a.copy() for a in d.state.ae]
    d.observe(logits, y, np.array([0]), where, step=0)  # warm-up: not recorded
    assert all(np.array_equal(a, b) for a, b in zip(before, d.state.ae))


def test_dale_warm_up_lasts_at_least_the_learning_rate_warm_up() -> None:
    """No representation is stable while the learning rate still rises: on a short budget
    (15 minutes on 2 cores is about 160 steps, 150 of them the rate's warm-up) DALE's own
    warm-up of 10 % must not end at step 16."""
    d = Dale(DaleConfig(warmup_frac=0.1, stable_frac=0.2), LossConfig(), _dale().items, total_steps=160,
             min_warmup_steps=150)
    assert d.warmup_end == 150
    for step in range(150):
        d.follow_budget(step, step / 160)
        assert d.phase(step) == "warmup" and not d.wants_partition(step)
    d.follow_budget(150, 150 / 160)
    assert d.phase(150) != "warmup" and d.wants_partition(150)


def test_dale_trains_exactly_as_standard_training_until_its_warm_up_ends(tmp_path: Path, small_pairs: Path) -> None:
    """Before the warm-up ends a DALE run is standard training, step for step: nothing of DALE
    (statistics, sampling, losses, random draws) may touch it. The rate's warm-up covers all
    four steps here, so DALE's must too."""
    common = [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
              "data.val_every=2", "run.steps=4", "run.eval_every=4", "optim.warmup_steps=4"]
    weights = {}
    for paradigm in ("dale", "standard"):
        cfg = load_config("dale_small", [*common, f'paradigm.type="{paradigm}"'])
        events = list(train(cfg, tmp_path / paradigm))
        assert not any(e["event"] == "partition" for e in events)
        weights[paradigm] = load_model_folder(tmp_path / paradigm / "last").net.state_dict()
    assert weights["dale"].keys() == weights["standard"].keys()
    for name, w in weights["dale"].items():
        torch.testing.assert_close(w, weights["standard"][name], rtol=0, atol=0, msg=name)
