"""Does the suite notice a wrong method? (issue 11 item 4): the four methods broken on purpose, one
way at a time, in the ways issue 11 names (and a few more of the same kind), each against the
tests that guard it. A mutant the tests pass with is a hole in the suite.

Every mutant is applied to a copy of the package in a temporary folder, never to this checkout
(a training or a benchmark running from the checkout keeps importing the real code); the copy's
``training`` and ``sample_data`` are put first on ``PYTHONPATH`` under their installed names, so
the editable install's mapping does not reach past them.

    python benchmarks/method_mutants.py [--only SUBSTRING ...] [--list]

First the guarding tests run on the copy unbroken: if they fail there, every "kill" would be
theirs, so nothing else runs. A mutant is killed when a test fails (pytest's exit 1); any other
exit (an import or collection error) is shown as an error, not a kill. Prints a table (mutant,
verdict, the tests' summary line, seconds) and writes ``results/method_mutants.json``; exits 1
if a mutant is not killed. A whole run takes about seven minutes alone (2026-12-04, Xeon VM).
The tests run with one thread each, but some start processes of their own (the two-rank tests):
never run it beside a training (it slowed one from 0.55 to 2.1 s a step, 2026-12-03).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DALE, ADV, FUZZY = "training/dale.py", "training/adversary.py", "napari_lesionseg/core/fuzzy.py"
BLOCKS, RESNET = "napari_lesionseg/core/models/blocks.py", "napari_lesionseg/core/models/resnet.py"
SGDC, DISC, TRAINER = ("napari_lesionseg/core/models/sgdc.py", "napari_lesionseg/core/models/discriminators.py",
                       "training/trainer.py")
T_DALE = ("tests/test_dale.py",)
T_ADV = ("tests/test_adversarial.py",)
T_MODELS = ("tests/test_models.py",)
T_DDP = ("tests/test_training.py::test_torchrun_two_cpu_ranks_end_identical",)
T_TRAIN = ("tests/test_training.py", "tests/test_adversarial.py")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    # DALE (METHODS.md 2)
    Mutant("DALE: labels left out of the partition's error rate", DALE,
           "e = np.abs((p > 0.5).astype(np.float32) - (it.y == 1).astype(np.float32))",
           "e = np.abs((p > 0.5).astype(np.float32) - 0 * (it.y == 1).astype(np.float32))", T_DALE),
    Mutant("DALE: labels left out of the online error rate", DALE,
           "e = np.abs((p > 0.5).astype(np.float32) - (yy == 1).astype(np.float32))",
           "e = np.abs((p > 0.5).astype(np.float32) - 0 * (yy == 1).astype(np.float32))", T_DALE),
    Mutant("DALE: fuzziness not kept to the border band", DALE,
           "        if c.band_px:\n            f = f * border_band", "        if False:\n            f = f * border_band", T_DALE),
    Mutant("DALE: AE and ER combined by 'or' whatever the config", FUZZY,
           's = np.maximum(s, other) if combine == "or" else np.minimum(s, other)', "s = np.maximum(s, other)", T_DALE),
    Mutant("DALE: histories weighted to the new value", DALE,
           "self.state.ae[i] = m * self.state.ae[i] + (1 - m) * h", "self.state.ae[i] = (1 - m) * self.state.ae[i] + m * h",
           T_DALE),
    Mutant("DALE: F used after one partition pass", DALE,
           'return self.state.passes >= (1 if self.cfg.stats == "online" else self.cfg.min_passes)',
           "return self.state.passes >= 1", T_DALE),
    Mutant("DALE: the stable step weights fuzzy pixels, not reliable ones", DALE,
           "        reliable = 1.0 - fuzzy\n", "        reliable = fuzzy\n", T_DALE),
    Mutant("DALE: annotated positives flipped to background", DALE,
           "            blend = torch.maximum(blend, t)", "            pass", T_DALE),
    Mutant("DALE: omega* with the wrong sign", DALE,
           "np.clip((r - bp) / (a - bp), 0.0, 1.0)", "np.clip((bp - r) / (a - bp), 0.0, 1.0)", T_DALE),
    Mutant("DALE: omega never moves", DALE,
           "new = c.omega_beta * float(self.state.omega[i]) + (1 - c.omega_beta) * omega_star(a, bp, r)",
           "new = float(self.state.omega[i])", T_DALE),
    Mutant("DALE: the blend mixes label and correction the wrong way round", DALE,
           "return (1 - fuzzy) * t + fuzzy * blend, logs", "return fuzzy * t + (1 - fuzzy) * blend, logs", T_DALE),
    Mutant("DALE: the model-side label inverted", DALE,
           "y_hat = (p_bar > 0.5).float()", "y_hat = (p_bar < 0.5).float()", T_DALE),
    Mutant("DALE: the EMA teacher jumps to the network", DALE,
           "tp.lerp_(p.detach(), 1.0 - d)", "tp.lerp_(p.detach(), d)", T_DALE),
    Mutant("DALE: W2 without the spread term", DALE,
           "return ((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()", "return ((mu1 - mu2) ** 2).sum()", T_DALE),
    Mutant("DALE: unstable pixels grouped by annotation, not by the corrected label", DALE,
           "[f * (yt == c).float() * valid for c in (0, 1)]", "[f * (yl == c).float() * valid for c in (0, 1)]", T_DALE),
    # adversaries (METHODS.md 1.3, 4.3-4.4)
    Mutant("PatchGAN: real and fake targets swapped in d_loss", ADV,
           "return 0.5 * (self._gan(self.net(x, gt), True) + self._gan(self.net(x, p_det), False))",
           "return 0.5 * (self._gan(self.net(x, gt), False) + self._gan(self.net(x, p_det), True))", T_ADV),
    Mutant("PatchGAN: the generator pushed towards 'fake'", ADV,
           "return self._gan(logits, True)  # non-saturating", "return self._gan(logits, False)  # non-saturating", T_ADV),
    Mutant("DDP: discriminator gradients not averaged over ranks", ADV,
           "            average_gradients_(self.net)  # DDP", "            pass  # DDP", T_ADV + T_DDP),
    Mutant("DDP: discriminator not broadcast from rank 0", ADV,
           "        broadcast_module_(self.net)  # under torchrun", "        pass  # under torchrun", T_ADV + T_DDP),
    Mutant("adversary: unannotated pixels judged as background", ADV,
           "return torch.where(ignore, p.detach(), t)", "return t", T_ADV),
    Mutant("SegAN: the critic minimises the difference", ADV,
           "return -multiscale_l1(self.net, mask_image(x, p_det), mask_image(x, gt), c.weighting)",
           "return multiscale_l1(self.net, mask_image(x, p_det), mask_image(x, gt), c.weighting)", T_ADV),
    Mutant("SegAN: clamping skips the convolutions too", ADV,
           "            if not c.clamp_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):",
           "            if not c.clamp_bn and isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Conv2d)):", T_ADV),
    Mutant("SegAN: the released code's layer weights dropped", DISC,
           "weights = [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 4.0][: len(fa)]", "weights = [1.0] * len(fa)", T_ADV + T_MODELS),
    Mutant("ImageGAN: the mean of patch logits (no global view)", DISC,
           "        return self.mlp(h.mean(dim=(2, 3)))", "        return self.trunk(torch.cat([x, m], 1)).mean(dim=(2, 3))",
           T_ADV + T_MODELS),
    # SGDC (METHODS.md 3)
    Mutant("SGDC: unannotated pixels as background in the edge target", ADV,
           "known = 1.0 - F.max_pool2d((y == 255).float()[:, None], 3, 1, 1)", "known = torch.ones_like(m)", T_ADV),
    Mutant("SGDC: an all-zero edge target", ADV, "    return dil - ero, known", "    return (dil - ero) * 0, known", T_ADV),
    Mutant("SGDC: heads read other heads' channels", SGDC,
           "u = u.reshape(b, self.heads, c // self.heads, self.k * self.k, h * w)",
           "u = u.reshape(b, c // self.heads, self.heads, self.k * self.k, h * w).transpose(1, 2)", T_MODELS),
    Mutant("SGDC: kernel softmax over pixels, not taps", SGDC,
           "kk = kap.reshape(b, self.heads, self.k * self.k, h * w).softmax(dim=2)",
           "kk = kap.reshape(b, self.heads, self.k * self.k, h * w).softmax(dim=3)", T_MODELS),
    # DynSegNet (METHODS.md 1)
    Mutant("DynSegNet: every ASPP dilation 1", BLOCKS,
           "conv_bn_relu(cin, cout, 1) if r == 1 else conv_bn_relu(cin, cout, 3, r)",
           "conv_bn_relu(cin, cout, 1) if r == 1 else conv_bn_relu(cin, cout, 3, 1)", T_MODELS),
    Mutant("DynSegNet: the ASPP image-pool bias inverted", BLOCKS,
           'nn.Conv2d(cin, cout, 1, bias=pool_norm == "none")', 'nn.Conv2d(cin, cout, 1, bias=pool_norm != "none")', T_MODELS),
    Mutant("DynSegNet: ResNet-34 with ResNet-18's layout", RESNET,
           '"resnet34": [3, 4, 6, 3]', '"resnet34": [2, 2, 2, 2]', T_MODELS),
    Mutant("DynSegNet: output stride 16 without dilation", RESNET,
           "                stride, dilation = 1, 2", "                stride, dilation = 1, 1", T_MODELS),
    Mutant("dynamic adaptation: the literal step a no-op", TRAINER,
           "            prm -= (eta * scale * g).to(prm.dtype)", "            prm -= 0 * (eta * scale * g).to(prm.dtype)", T_TRAIN),
    Mutant("dynamic adaptation: the literal step uphill", TRAINER,
           "            prm -= (eta * scale * g).to(prm.dtype)", "            prm += (eta * scale * g).to(prm.dtype)", T_TRAIN),
    Mutant("dynamic adaptation: the literal step on the encoder", TRAINER,
           'LITERAL_PREFIXES = ("blocks", "gates")', 'LITERAL_PREFIXES = ("encoder",)', T_TRAIN),
]


def copy_package(dst: Path) -> None:
    """The code and tests as they are in this checkout (uncommitted changes included)."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in ("napari_lesionseg", "training", "tests", "sample_data"):
        shutil.copytree(ROOT / name, dst / name, ignore=skip)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    shim = dst / "_shim"
    shim.mkdir()
    (shim / "lesionseg_training").symlink_to(dst / "training")
    (shim / "lesionseg_sample_data").symlink_to(dst / "sample_data")


def run_tests(tests: tuple[str, ...] | list[str], work: Path, env: dict, *flags: str) -> subprocess.CompletedProcess:
    """pytest on ``tests`` in the copy ``work``."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *flags, *tests],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1800)


def summary_line(r: subprocess.CompletedProcess) -> str:
    """pytest's last line ("1 failed, 14 passed in 4.3s"), or the end of what it wrote to stderr."""
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else r.stderr[-200:]


def run_mutant(m: Mutant, work: Path, env: dict) -> dict:
    path = work / m.file
    src = path.read_text()
    if src.count(m.old) != 1:  # the code moved on: the mutant needs writing again
        return {"mutant": m.name, "verdict": "not applied", "summary": f"{m.file}: the code to break is not there once",
                "seconds": 0.0}
    path.write_text(src.replace(m.old, m.new))
    t0 = time.perf_counter()
    try:
        r = run_tests(m.tests, work, env, "-x")
    finally:
        path.write_text(src)
    # pytest's exit 1: a test failed (killed); 0: all passed (survived); anything else (an import or
    # collection error, no tests collected, interrupted) says nothing about the tests: shown apart
    verdict = {0: "SURVIVED", 1: "killed"}.get(r.returncode, f"error (pytest exit {r.returncode})")
    return {"mutant": m.name, "verdict": verdict, "summary": summary_line(r), "tests": list(m.tests),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=[], help="mutants whose name contains one of these")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--out", default=str(HERE / "results" / "method_mutants.json"))
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(s.lower() in m.name.lower() for s in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  ({m.file}; {' '.join(m.tests)})")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        work = Path(tmp)
        copy_package(work)
        env = dict(os.environ, PYTHONPATH=f"{work / '_shim'}{os.pathsep}{work}", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", QT_QPA_PLATFORM="offscreen")
        tests = sorted({t for m in chosen for t in m.tests})
        r = run_tests(tests, work, env)
        if r.returncode != 0:
            failures = r.stdout.split("= FAILURES =", 1)[-1].splitlines()
            print(f"the guarding tests fail on the unbroken copy (pytest exit {r.returncode}); no mutant was run:\n"
                  + "\n".join(failures[-60:]), file=sys.stderr)
            return 2
        print(f"unbroken copy: {summary_line(r)}", flush=True)
        for m in chosen:
            row = run_mutant(m, work, env)
            rows.append(row)
            print(f"{row['verdict']:<12} {row['seconds']:>7.1f} s  {row['mutant']}  [{row['summary']}]", flush=True)
    survived = [r["mutant"] for r in rows if r["verdict"] != "killed"]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants killed" + (f"; not killed: {survived}" if survived else ""))
    Path(args.out).write_text(json_text({"mutants": rows, "killed": len(rows) - len(survived), "of": len(rows)}, indent=1))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
