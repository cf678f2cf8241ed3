"""DALE (METHODS.md 2, with the changes training/README.md "Our DALE" gives the reasons for):
a fuzzy/reliable partition by soft-thresholded average entropy (AE) *and* error rate (ER) near
lesion borders, label confidence omega chosen for loss consistency (never below a floor, and
never turning an annotated lesion pixel into background), an EMA teacher for the model-side
target, Wasserstein alignment of unstable features, and the warm-up / stable / alternating
schedule."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from napari_lesionseg.core.fuzzy import binary_entropy, fuzzy_membership

from .data import Prepared
from .losses import supervised_loss
from .train_config import DaleConfig, LossConfig
from .validate import predict_work


def border_band(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels within ``r`` px (chessboard) of the border of ``mask``: dilate_r != erode_r over
    square windows (pixels outside the image ignored). Computed on the mask's bounding box grown by
    ``2 r`` only: farther out no window holds a mask pixel (with full-image filters it took 20 s of a
    200-step DALE run's 310 s; benchmarks/README.md "Figures behind design choices")."""
    out = np.zeros(mask.shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    y0, y1 = max(rows[0] - 2 * r, 0), min(rows[-1] + 2 * r + 1, mask.shape[0])
    x0, x1 = max(cols[0] - 2 * r, 0), min(cols[-1] + 2 * r + 1, mask.shape[1])
    u = mask[y0:y1, x0:x1].astype(np.uint8)
    k = 2 * r + 1  # "reflect" at the edges repeats pixels already inside each window: ignored
    out[y0:y1, x0:x1] = ndimage.maximum_filter(u, size=k) != ndimage.minimum_filter(u, size=k)
    return out


def expected_loss(z: torch.Tensor) -> torch.Tensor:
    """The BCE a label drawn from the model's own belief would cost: the entropy of
    ``sigmoid(z)`` in nats (between ``min`` and ``max`` of the two labels' losses)."""
    return F.binary_cross_entropy_with_logits(z, torch.sigmoid(z), reduction="none")


def omega_star(a: float, bp: float, r: float) -> float:
    """Loss-consistent label confidence: ``clip((R - Bp) / (A - Bp), 0, 1)`` (1 when A == Bp)."""
    if abs(a - bp) < 1e-8:
        return 1.0
    return float(np.clip((r - bp) / (a - bp), 0.0, 1.0))


def w2_squared(mu1: torch.Tensor, sd1: torch.Tensor, mu2: torch.Tensor, sd2: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians."""
    return ((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()


def weighted_moments(phi: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel weighted mean and std of ``phi (B, D, h, w)`` under ``w (B, h, w)``, and the weight
    sum; or under K weights at once, ``w (B, K, h, w)``: ``(K, D)``, ``(K, D)``, ``(K,)``. As batched
    matrix products (first and second moment) that read the features once for all K weights:
    centring the features once per weight took 0.09 s of a 1.06 s DALE step."""
    b, d = phi.shape[:2]
    single = w.ndim == 3
    w = w[:, None] if single else w
    ws = w.sum(dim=(0, 2, 3)).float()
    # in fp32 whatever the features' dtype (bf16 under autocast): E[x^2] - mu^2 cancels, and bf16
    # products would leave the std some 15 % off for features whose mean is large against their spread
    with torch.autocast(device_type=phi.device.type, enabled=False):
        wn = (w.float() / ws.clamp_min(1e-6)[None, :, None, None]).reshape(b, w.shape[1], -1).transpose(1, 2)
        p = phi.float().reshape(b, d, -1)
        mu = torch.bmm(p, wn).sum(0).T  # (K, D)
        m2 = torch.bmm(p * p, wn).sum(0).T
        sd = torch.sqrt((m2 - mu * mu).clamp_min(0.0) + 1e-6)
    return (mu[0], sd[0], ws[0]) if single else (mu, sd, ws)


@dataclass
class DaleState:
    """Per-image statistics on the working grid, omega per image, stable feature statistics."""

    ae: list[np.ndarray] = field(default_factory=list)
    er: list[np.ndarray] = field(default_factory=list)
    fuzzy: list[np.ndarray] = field(default_factory=list)
    omega: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    stable_mu: dict[int, torch.Tensor] = field(default_factory=dict)
    stable_sd: dict[int, torch.Tensor] = field(default_factory=dict)
    passes: int = 0
    seen: list[np.ndarray] = field(default_factory=list)  # online: observations per pixel (uint8, saturating)
    pred: list[np.ndarray] = field(default_factory=list)  # online: the last prediction > 0.5 per pixel


class Dale:
    def __init__(self, cfg: DaleConfig, loss_cfg: LossConfig, items: list[Prepared], total_steps: int,
                 min_warmup_steps: int = 0) -> None:
        """``min_warmup_steps``: DALE's warm-up lasts at least this many steps (the trainer passes
        the learning rate's warm-up: no representation is stable while the rate is still rising,
        and a short budget, 15 minutes on 2 cores, is about 160 steps, 150 of them rate warm-up)."""
        self.cfg = cfg
        self.loss_cfg = loss_cfg
        self.items = items
        self.total = total_steps
        self.min_warmup = max(1, int(min_warmup_steps))
        self.state = DaleState(omega=np.ones(len(items), np.float32))
        self.warmup_end = max(self.min_warmup, int(np.ceil(cfg.warmup_frac * total_steps)))
        self.stable_end = self.warmup_end + int(np.ceil(cfg.stable_frac * total_steps))
        self.teacher: nn.Module | None = None
        self.progress = 0.0  # of the budget, as of the last follow_budget
        self.next_pass = cfg.warmup_frac  # progress of the next partition pass (partition_every_frac)
        self._after_pass = False
        self._dirty: set[int] = set()  # online: images observed since F was last computed

    # ---- the EMA teacher (the model-side target of L_f) -------------------------------------
    def attach(self, net: nn.Module) -> None:
        """Start the EMA teacher from ``net`` (the unwrapped network); no-op for ``teacher="current"``."""
        if self.cfg.teacher != "ema":
            return
        self.teacher = copy.deepcopy(net).eval()
        for prm in self.teacher.parameters():
            prm.requires_grad_(False)

    @torch.no_grad()
    def after_step(self, net: nn.Module) -> None:
        """``teacher <- decay * teacher + (1 - decay) * net`` (parameters; buffers copied)."""
        if self.teacher is None:
            return
        d = self.cfg.teacher_decay
        for tp, p in zip(self.teacher.parameters(), net.parameters()):
            tp.lerp_(p.detach(), 1.0 - d)
        for tb, b in zip(self.teacher.buffers(), net.buffers()):
            tb.copy_(b)

    @torch.no_grad()
    def teacher_prob(self, x: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        """The model-side belief ``p_bar (B, H, W)``: the EMA teacher's on ``x``, else the
        current model's (detached)."""
        if self.teacher is None or x is None:
            return torch.sigmoid(logits[:, 0].detach().float())
        return torch.sigmoid(self.teacher(x).logits[:, 0].float())

    # ---- checkpointing (tensors only, so ``torch.load(weights_only=True)`` reads it) -------------
    def state_dict(self) -> dict:
        st = self.state
        return {"ae": [torch.from_numpy(a) for a in st.ae], "er": [torch.from_numpy(a) for a in st.er],
                "fuzzy": [torch.from_numpy(a) for a in st.fuzzy], "omega": torch.from_numpy(st.omega),
                "stable_mu": dict(st.stable_mu), "stable_sd": dict(st.stable_sd), "passes": st.passes,
                "seen": [torch.from_numpy(a) for a in st.seen], "pred": [torch.from_numpy(a) for a in st.pred],
                "warmup_end": self.warmup_end, "stable_end": self.stable_end, "next_pass": self.next_pass,
                "teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, d: dict) -> None:
        if len(d["omega"]) != len(self.items):
            raise ValueError(f"the saved DALE state is for {len(d['omega'])} training images, "
                             f"this run has {len(self.items)}")
        self.state = DaleState(ae=[t.numpy() for t in d["ae"]], er=[t.numpy() for t in d["er"]],
                               fuzzy=[t.numpy() for t in d["fuzzy"]], omega=d["omega"].numpy().copy(),
                               stable_mu=dict(d["stable_mu"]), stable_sd=dict(d["stable_sd"]),
                               passes=int(d["passes"]), seen=[t.numpy().copy() for t in d.get("seen", [])],
                               pred=[t.numpy().copy() for t in d.get("pred", [])])
        self.warmup_end, self.stable_end = int(d["warmup_end"]), int(d["stable_end"])
        self.next_pass = float(d.get("next_pass", self.next_pass))
        if self.teacher is not None and d.get("teacher") is not None:
            self.teacher.load_state_dict(d["teacher"])

    # ---- schedule --------------------------------------------------------------------------
    def follow_budget(self, step: int, progress: float) -> None:
        """Move the phase boundaries to the step where the budget's progress (steps or wall
        time, whichever is further along: what the LR schedule follows) reaches their
        fractions. With a time budget the run ends long before ``total_steps``; without this,
        a large ``run.steps`` kept DALE in warm-up (plain training) for the whole run."""
        eps = 1e-9  # 0.1 + 0.2 > 0.3 in floating point
        self.progress = progress
        if self._after_pass:  # the next pass is due a fraction after this one *ended*
            self.next_pass = progress + (self.cfg.partition_every_frac or 0.0)
            self._after_pass = False
        if step < self.warmup_end and progress >= self.cfg.warmup_frac - eps:
            self.warmup_end = max(self.min_warmup, step)
        if step < self.stable_end and progress >= self.cfg.warmup_frac + self.cfg.stable_frac - eps:
            self.stable_end = max(self.warmup_end, step)

    def phase(self, step: int) -> str:
        if step < self.warmup_end:
            return "warmup"
        if step < self.stable_end:
            return "stable"
        return "fuzzy" if (step - self.stable_end) % (2 * self.cfg.alternate_every) >= self.cfg.alternate_every else "stable"

    def wants_partition(self, step: int) -> bool:
        """At the end of warm-up, then every ``partition_every`` steps, or, with
        ``partition_every_frac``, every time the budget's progress passes another such fraction
        (short time budgets: a fixed step interval would give one pass, or none)."""
        if step < self.warmup_end:
            return False
        frac = self.cfg.partition_every_frac
        if frac is None:
            return (step - self.warmup_end) % self.cfg.partition_every == 0
        if step == self.warmup_end or self.progress >= self.next_pass - 1e-9:
            self.next_pass = max(self.next_pass, self.progress) + frac
            self._after_pass = True
            return True
        return False

    @property
    def partitioned(self) -> bool:
        """True once F may be used: after ``min_passes`` partition passes; online, after the
        first membership update (each pixel then needs ``min_passes`` observations)."""
        return self.state.passes >= (1 if self.cfg.stats == "online" else self.cfg.min_passes)

    # ---- online statistics: the training steps' own predictions -----------------------------
    def _init_online(self) -> None:
        st = self.state
        if not st.ae:
            for it in self.items:
                st.ae.append(np.zeros(it.y.shape, np.float32))
                st.er.append(np.zeros(it.y.shape, np.float32))
                st.fuzzy.append(np.zeros(it.y.shape, np.float32))
                st.seen.append(np.zeros(it.y.shape, np.uint8))
                st.pred.append(np.zeros(it.y.shape, bool))

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, y: torch.Tensor, idx: np.ndarray, where: np.ndarray, step: int) -> None:
        """Online AE/ER (``stats = "online"``): fold this step's predictions on its crops into
        each source pixel's history (EMA with ``hist_momentum``; the first observation plainly),
        through ``where``, the crops' source pixels (-1 outside the image). From the end of
        warm-up on; no extra forward pass."""
        if self.cfg.stats != "online" or step < self.warmup_end or where is None or len(where) != len(idx):
            return
        self._init_online()
        st, m = self.state, self.cfg.hist_momentum
        p = torch.sigmoid(logits[:, 0].detach().float()).cpu().numpy()
        yy = y.cpu().numpy()
        h = binary_entropy(p)
        e = np.abs((p > 0.5).astype(np.float32) - (yy == 1).astype(np.float32))
        for b in range(len(idx)):
            i = int(idx[b])
            ok = (where[b] >= 0) & (yy[b] != 255)
            flat = where[b][ok]
            seen = st.seen[i].reshape(-1)
            first = seen[flat] == 0
            for hist, new in ((st.ae[i].reshape(-1), h[b][ok]), (st.er[i].reshape(-1), e[b][ok])):
                hist[flat] = np.where(first, new, m * hist[flat] + (1 - m) * new)
            st.pred[i].reshape(-1)[flat] = p[b][ok] > 0.5
            self._dirty.add(i)
            seen[flat] = np.minimum(seen[flat].astype(np.int32) + 1, 255).astype(np.uint8)

    def _update_online(self) -> float:
        """F of every image from its online histories; 0 where a pixel was seen fewer than
        ``min_passes`` times. Returns the fuzzy fraction of valid pixels."""
        self._init_online()
        st = self.state
        fz_sum = n_sum = 0.0
        for i, it in enumerate(self.items):
            if i in self._dirty:  # an image not seen since the last update keeps its F
                f = self.membership(st.ae[i], st.er[i], it.y, st.pred[i].astype(np.float32), it.fov)
                f[st.seen[i] < self.cfg.min_passes] = 0.0
                st.fuzzy[i] = f
            f = st.fuzzy[i]
            valid = it.fov & (it.y != 255)
            fz_sum += float(f[valid].sum())
            n_sum += float(valid.sum())
        st.passes += 1
        self._dirty.clear()
        return fz_sum / max(n_sum, 1.0)

    # ---- partition pass ----------------------------------------------------------------------
    def membership(self, ae: np.ndarray, er: np.ndarray, y: np.ndarray, p: np.ndarray, fov: np.ndarray) -> np.ndarray:
        """F from the histories: AE&ER soft-thresholding, kept to the band around the borders of
        annotated and predicted lesions, zero outside the disc and on ignored pixels."""
        c = self.cfg
        f = fuzzy_membership(ae, er, c.tau_ae, c.tau_er, c.delta, combine=c.combine)
        if c.band_px:
            f = f * border_band((y == 1) | (p > 0.5), c.band_px)
        f[~fov | (y == 255)] = 0.0
        return f.astype(np.float32)

    @torch.no_grad()
    def partition(self, net: nn.Module, stride: int) -> float:
        """Eval-mode pass over the unaugmented training images: update AE/ER histories and F
        (``stats = "online"``: only F, from the histories the training steps built). Returns the
        fuzzy fraction of valid pixels."""
        if self.cfg.stats == "online":
            return self._update_online()
        was = net.training
        net.eval()
        m = self.cfg.hist_momentum
        first = self.state.passes == 0
        fz_sum = n_sum = 0.0
        for i, it in enumerate(self.items):
            p = predict_work(net, it.x, stride)
            h = binary_entropy(p)
            e = np.abs((p > 0.5).astype(np.float32) - (it.y == 1).astype(np.float32))
            e[it.y == 255] = 0.0
            if first:
                self.state.ae.append(h)
                self.state.er.append(e)
            else:
                self.state.ae[i] = m * self.state.ae[i] + (1 - m) * h
                self.state.er[i] = m * self.state.er[i] + (1 - m) * e
            f = self.membership(self.state.ae[i], self.state.er[i], it.y, p, it.fov)
            if first:
                self.state.fuzzy.append(f)
            else:
                self.state.fuzzy[i] = f
            valid = it.fov & (it.y != 255)
            fz_sum += float(f[valid].sum())
            n_sum += float(valid.sum())
        self.state.passes += 1
        net.train(was)
        return fz_sum / max(n_sum, 1.0)

    # ---- losses ----------------------------------------------------------------------------
    def loss(self, out, y: torch.Tensor, fuzzy: torch.Tensor, idx: np.ndarray, step: int,
             x: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The supervised term for this step's phase. ``fuzzy (B, H, W)`` in [0, 1]; ``x`` the
        batch, for the EMA teacher."""
        phase = self.phase(step)
        if phase == "warmup" or not self.partitioned:
            loss, logs = supervised_loss(out.logits, y, self.loss_cfg)
            return loss, {**logs, "phase": 0.0}
        reliable = 1.0 - fuzzy
        blend_step = phase == "fuzzy" and self.cfg.fuzzy_step == "blend"
        if not blend_step:  # L_nf: the stable step, and METHODS' separate fuzzy step
            l_nf, logs = supervised_loss(out.logits, y, self.loss_cfg, weight=reliable)
            if phase == "stable":
                return l_nf, {**logs, "phase": 1.0}
        p_bar = self.teacher_prob(x, out.logits)
        if blend_step:
            soft, omega_logs, y_tilde = self.blended_target(out.logits, y, fuzzy, reliable, idx, p_bar)
            l_f, logs = supervised_loss(out.logits, y, self.loss_cfg, soft_target=soft)
            body = l_f
        else:
            l_f, omega_logs, y_tilde = self.fuzzy_loss(out.logits, y, fuzzy, reliable, idx, p_bar)
            body = l_f + self.cfg.lambda_keep * l_nf
        l_align = self.align_loss(out.features, y, y_tilde, fuzzy) if out.features is not None else l_f * 0
        total = body + self.cfg.lambda_align * l_align
        return total, {**logs, **omega_logs, "l_f": float(l_f.detach()), "l_align": float(l_align.detach()),
                       "phase": 2.0}

    def blended_target(self, logits: torch.Tensor, y: torch.Tensor, fuzzy: torch.Tensor, reliable: torch.Tensor,
                       idx: np.ndarray, p_bar: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The fuzzy step's target for the standard loss over every valid pixel: the label on
        reliable pixels, the label-confidence blend on fuzzy ones, mixed by F. Each pixel keeps
        the weight it has in the standard loss (``fuzzy_step = "separate"`` normalises L_f by
        the fuzzy pixels alone, which gives a pixel in a small fuzzy region hundreds of times the
        weight of any other)."""
        blend, logs = self.label_blend(logits, y, fuzzy, reliable, idx, p_bar)
        t = (y == 1).float()
        return (1 - fuzzy) * t + fuzzy * blend, logs, (blend > 0.5).float()

    def fuzzy_loss(self, logits: torch.Tensor, y: torch.Tensor, fuzzy: torch.Tensor, reliable: torch.Tensor,
                   idx: np.ndarray, p_bar: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """METHODS' ``L_f``: the standard loss (same pos_weight and Dice) on the fuzzy pixels
        alone against the label-confidence blend. Returns the loss, the logs and the corrected
        hard label ``y_tilde``."""
        blend, logs = self.label_blend(logits, y, fuzzy, reliable, idx, p_bar)
        y_tilde = (blend > 0.5).float()
        if float((fuzzy * (y != 255).float()).sum()) < 1.0:
            return logits.sum() * 0, logs, y_tilde
        l_f, _ = supervised_loss(logits, y, self.loss_cfg, weight=fuzzy, soft_target=blend)
        return l_f, logs, y_tilde

    def label_blend(self, logits: torch.Tensor, y: torch.Tensor, fuzzy: torch.Tensor, reliable: torch.Tensor,
                    idx: np.ndarray, p_bar: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The label-confidence blend ``omega * y + (1 - omega) * y_hat`` (``y_hat = 1[p_bar >
        0.5]``; with ``protect_positives`` an annotated lesion pixel keeps 1), after updating
        each crop's image's omega where the crop has fuzzy blended pixels (no gradient)."""
        c = self.cfg
        z = logits[:, 0].detach().float()
        valid = (y != 255).float()
        t = (y == 1).float()
        if p_bar is None:
            p_bar = torch.sigmoid(z)
        y_hat = (p_bar > 0.5).float()
        where = fuzzy * valid * ((1.0 - t) if c.protect_positives else 1.0)  # where omega acts
        l_label = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        l_pred = F.binary_cross_entropy_with_logits(z, y_hat, reduction="none")
        ref = expected_loss(z) if c.omega_reference == "expected" else None
        omegas = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
        for b in range(z.shape[0]):
            i = int(idx[b])
            fs = float(where[b].sum())
            if fs >= 1.0:
                a = float((where[b] * l_label[b]).sum()) / fs
                bp = float((where[b] * l_pred[b]).sum()) / fs
                if ref is not None:
                    r = float((where[b] * ref[b]).sum()) / fs
                else:
                    rw = reliable[b] * valid[b]
                    r = float((rw * l_label[b]).sum()) / max(float(rw.sum()), 1e-6)
                new = c.omega_beta * float(self.state.omega[i]) + (1 - c.omega_beta) * omega_star(a, bp, r)
                self.state.omega[i] = np.float32(min(1.0, max(c.omega_min, new)))
            omegas[b] = float(self.state.omega[i])
        w = omegas[:, None, None]
        blend = w * t + (1 - w) * y_hat
        if c.protect_positives:
            blend = torch.maximum(blend, t)
        return blend, {"omega": float(omegas.mean())}

    def align_loss(self, phi: torch.Tensor, y: torch.Tensor, y_tilde: torch.Tensor, fuzzy: torch.Tensor) -> torch.Tensor:
        """Mean over classes of W2^2(unstable, stable EMA) / D, for classes with enough unstable pixels."""
        hw = phi.shape[-2:]
        f = F.interpolate(fuzzy[:, None], size=hw, mode="area")[:, 0]
        yl = F.interpolate((y == 1).float()[:, None], size=hw, mode="nearest")[:, 0]
        yt = F.interpolate(y_tilde[:, None], size=hw, mode="nearest")[:, 0]
        valid = F.interpolate((y != 255).float()[:, None], size=hw, mode="nearest")[:, 0]
        phi = phi.float()
        for stats in (self.state.stable_mu, self.state.stable_sd):  # resumed state is loaded on the CPU
            for c in stats:
                stats[c] = stats[c].to(phi.device)
        ws = [(1 - f) * (yl == c).float() * valid for c in (0, 1)] + [f * (yt == c).float() * valid for c in (0, 1)]
        mu, sd, n = weighted_moments(phi, torch.stack(ws, dim=1))  # stable 0, 1; unstable 0, 1
        terms = []
        for c in (0, 1):
            with torch.no_grad():
                mu_s, sd_s = mu[c].detach(), sd[c].detach()
                if n[c] > 1:
                    if c in self.state.stable_mu:
                        mom = self.cfg.stats_momentum
                        self.state.stable_mu[c] = mom * self.state.stable_mu[c] + (1 - mom) * mu_s
                        self.state.stable_sd[c] = mom * self.state.stable_sd[c] + (1 - mom) * sd_s
                    else:
                        self.state.stable_mu[c], self.state.stable_sd[c] = mu_s.clone(), sd_s.clone()
            if c not in self.state.stable_mu or float(n[2 + c]) < self.cfg.min_pixels:
                continue
            terms.append(w2_squared(mu[2 + c], sd[2 + c], self.state.stable_mu[c], self.state.stable_sd[c]) / phi.shape[1])
        return torch.stack(terms).mean() if terms else phi.sum() * 0
