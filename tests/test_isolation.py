"""The core and the training module never pull in Qt or napari."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_training_import_without_qt_or_napari() -> None:
    code = (
        "import sys\n"
        "import napari_lesionseg.core, napari_lesionseg.core.inference, napari_lesionseg.core.batch\n"
        "import napari_lesionseg.core.model_folder, napari_lesionseg.core.report, napari_lesionseg.cli\n"
        "import lesionseg_training, lesionseg_training.trainer, lesionseg_training.finetune\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qtpy', 'napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
