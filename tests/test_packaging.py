"""The wheel carries what an installed user needs: the default model, the sample data, the
training presets and the manifest (not only the checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")  # the build backend, used without isolation (no downloads)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_lesionseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("napari_lesionseg/napari.yaml", "napari_lesionseg/models/default/config.json",
                   "napari_lesionseg/models/default/weights.safetensors", "lesionseg_sample_data/IDRiD_04.jpg",
                   "lesionseg_sample_data/IDRiD_04_HE.png", "lesionseg_sample_data/README.md",
                   "lesionseg_training/configs/default.toml", "lesionseg_training/README.md",
                   "napari_lesionseg/_qt/segment.py"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
