"""The core and the training module never pull in Qt or napari."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_training_import_without_qt_or_napari() -> None:
    """... nor scipy.signal (for one FFT convolution it imported scipy.stats and more: 0.7 s of
    every `lesionseg predict` process, 4.95 -> 4.23 s for one photo, 2026-12-08)."""
    code = (
        "import sys\n"
        "import napari_lesionseg.core, napari_lesionseg.core.inference, napari_lesionseg.core.batch\n"
        "import napari_lesionseg.core.model_folder, napari_lesionseg.core.report, napari_lesionseg.cli\n"
        "import lesionseg_training, lesionseg_training.trainer, lesionseg_training.finetune\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qtpy', 'napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt'))\n"
        "bad += [m for m in ('scipy.signal', 'scipy.stats') if m in sys.modules]  # 0.7 s of every lesionseg command's start\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_reader_and_the_project_store_import_without_torch() -> None:
    """napari imports the npe2 reader to ask it about every folder it opens (the reader accepts
    directories) and every file its patterns match: through the lesion table's annotations and
    the model package's factory it imported torch, 1.7 s added to opening any folder in napari
    (0.3 s now; benchmarks/README.md "Figures behind design choices")."""
    code = (
        "import sys\n"
        "import napari_lesionseg._io, napari_lesionseg.core.store, napari_lesionseg.core.segment_layers\n"
        "import napari_lesionseg.core.model_config, napari_lesionseg.core.models\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", "from napari_lesionseg.core.models import build_model, SegOutput"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr  # the factory still comes when asked for
