"""napari crashed (a segmentation fault in Mesa's software OpenGL) when a Shapes layer was
removed and the viewer drawn again: with the plugin's docks open it no longer does
(``_qt/gl_workaround.py``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

SCENE = textwrap.dedent("""
    import time
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.zeros((600, 900, 3), np.uint8), rgb=True, name="photo")
    viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    app = QApplication.instance()

    def spin(turns):
        for _ in range(turns):
            app.processEvents()
            time.sleep(0.02)

    spin(10)
    for i in range(3):  # the disc and macula outlines of a photo segmented, removed, segmented again
        layer = viewer.add_shapes([np.array([[100, 100], [100, 300], [300, 300], [300, 100]])],
                                  shape_type="ellipse", edge_color="white", face_color="transparent",
                                  name=f"outline {i}")
        spin(10)
        viewer.layers.remove(layer)
        spin(10)  # under Mesa 22.3's llvmpipe the photo's second draw after the removal crashed
    print("survived", flush=True)
""")


def test_removing_a_shapes_layer_leaves_napari_running(tmp_path: Path) -> None:
    """On a 24-bit X screen of its own where xvfb-run is at hand (CI): the crash needs one, and
    pytest-xvfb's display (16-bit) never showed it."""
    script = tmp_path / "scene.py"
    script.write_text(SCENE)
    xvfb = shutil.which("xvfb-run")
    wrap = [xvfb, "-a", "-s", "-screen 0 1600x1000x24"] if xvfb else []
    done = subprocess.run([*wrap, sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_programs_are_left_to_the_context(monkeypatch) -> None:
    from vispy.gloo import gl, glir

    from napari_lesionseg._qt.gl_workaround import keep_gl_programs

    assert keep_gl_programs() and keep_gl_programs()  # once, then a no-op
    deleted: list[int] = []
    monkeypatch.setattr(gl, "glDeleteProgram", deleted.append)
    monkeypatch.setattr(gl, "glDeleteBuffer", deleted.append)

    class Program:
        _handle = 7

    glir.GlirProgram.delete(Program())
    assert deleted == []  # the program is left alone
    glir.GlirBuffer.delete(Program())
    assert deleted == [7]  # buffers are still deleted
