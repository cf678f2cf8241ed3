"""Test helpers shared across test modules (importable: tests/ is on sys.path under pytest)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from napari_lesionseg.core.dataclass_io import from_dict
from napari_lesionseg.core.model_config import ModelConfig

TINY = {
    "name": "tiny-test",
    "network": {"arch": "unet_small", "in_channels": 4, "widths": [4, 8, 16], "prior": 0.05},
    "preprocess": {"fov_diameter": 128, "green_contrast_sigma": 4.0},
    "inference": {"tile_size": 64, "tile_overlap": 0.25, "tta": "hflip"},
}


def tiny_config(**inference: object) -> ModelConfig:
    """A random-init-sized config: 3-level U-Net of 4-16 channels at a 128 px disc."""
    data = {**TINY, "inference": {**TINY["inference"], **inference}}
    return from_dict(ModelConfig, data)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module (they import each other by bare name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def train_until(cfg: object, run_dir: Path, step: int) -> None:
    """Train ``cfg`` into ``run_dir`` and stop as a killed process would, when step ``step`` is
    reported (its resume state is the last one written before it)."""
    from lesionseg_training.trainer import train

    gen = train(cfg, run_dir)
    for ev in gen:
        if ev["event"] == "step" and ev["step"] == step:
            break
    gen.close()


def project_with_predictions(root: Path, images: Path, models: tuple[str, ...] = ("m1", "m1")):
    """A plugin project holding ``images``' photos (sorted by name), each with a stored
    prediction by the model named in ``models`` (in order): nothing found, the fuzzy map 0.2,
    0.6, ... so that the last photo is the most uncertain."""
    import numpy as np
    from PIL import Image

    from napari_lesionseg.core.store import Project

    proj = Project(root)
    for k, (img, model) in enumerate(zip(sorted(images.iterdir()), models)):
        iid = proj.add_image(img)
        h, w = np.asarray(Image.open(img)).shape[:2]
        proj.save_prediction(iid, model, np.full((h, w), 0.1, np.float32), np.zeros((h, w), np.uint8),
                             np.full((h, w), 0.2 + 0.4 * k, np.float32))
    return proj


def corrected_project(root: Path, pairs: Path, stems: tuple[str, ...] = ("IDRiD_04",)):
    """A plugin project holding the photos ``stems`` of ``pairs`` (``images/``, ``masks/``), each
    with its hemorrhage mask saved as a correction."""
    from napari_lesionseg.core.image_io import read_mask
    from napari_lesionseg.core.store import Project

    proj = Project(root)
    for stem in stems:
        iid = proj.add_image(pairs / "images" / f"{stem}.jpg")
        proj.save_label(iid, read_mask(pairs / "masks" / f"{stem}_HE.png"))
    return proj


def run_here(cmd: list[str], **_subprocess_options: object) -> subprocess.CompletedProcess[str]:
    """``[sys.executable, "-m", MODULE, *ARGS]`` run as ``MODULE.main(ARGS)`` in this process,
    its stdout and stderr captured as ``subprocess.run(cmd, capture_output=True, text=True)``
    would capture them (some 4 s less a call: no new interpreter importing torch). An
    exception the command's error policy does not catch (a subprocess's traceback) is raised
    into the test. The process-wide settings a command makes for its own process (the malloc
    setting, the SIGTERM handler) are left out or undone. Tests of the process itself (the
    entry point, signals, a hang under a timeout) run the subprocess."""
    import contextlib
    import io
    import signal

    from napari_lesionseg.core import runtime

    assert list(cmd[:2]) == [sys.executable, "-m"], cmd
    module = {"lesionseg_training": "lesionseg_training.cli"}.get(cmd[2], cmd[2])
    main = importlib.import_module(module).main
    argv = [str(a) for a in cmd[3:]]
    out, err = io.StringIO(), io.StringIO()
    sigterm = signal.getsignal(signal.SIGTERM)
    tune = runtime.tune_allocator
    runtime.tune_allocator = lambda: False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as ended:  # argparse's usage errors, --help
                code = ended.code
                if isinstance(code, str):
                    print(code, file=sys.stderr)
                code = code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        runtime.tune_allocator = tune
        signal.signal(signal.SIGTERM, sigterm)
    return subprocess.CompletedProcess(list(cmd), int(code or 0), out.getvalue(), err.getvalue())
