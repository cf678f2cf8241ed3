"""A workaround for a crash in napari's drawing: OpenGL programs are left undeleted when a layer
goes.

Removing a Shapes layer (the disc and macula outlines, Review's frame) and then drawing the
viewer crashed napari outright: a segmentation fault inside Mesa's software OpenGL (llvmpipe,
Mesa 22.3 as Debian 12 ships it: the CI's renderer and that of any machine without a graphics
driver; napari 0.9.2, vispy 0.17). Seen as an annotator would meet it: segment a photo, delete
its result layers together, segment it again; and on its own: a viewer holding a photo, a Shapes
layer added, drawn and removed, and the photo's next draw but one crashes. Skipping vispy's
``glDeleteProgram`` when a visual goes stops it in both; deleting buffers, textures and shaders
does not matter, nor does the program being current (measured one at a time; napari issues 6472
and 8471 report access violations of the same kind on Windows). So vispy is made to leave
program objects alone: they go with napari's OpenGL context when napari closes. What that
costs was measured: 60 Shapes and 60 Image layers added and removed grew napari by the same 140 MB
with the programs kept as with them deleted (napari's own growth; a program is small).
"""

from __future__ import annotations

_INSTALLED = False


def keep_gl_programs() -> bool:
    """Make vispy leave OpenGL program objects undeleted (see the module's text); once per
    process. False when this vispy has no such hook (then nothing is changed)."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        from vispy.gloo import glir
    except ImportError:
        return False
    program = getattr(glir, "GlirProgram", None)
    if program is None or not callable(getattr(program, "delete", None)):
        return False

    def delete(self: object) -> None:
        """Left to the context's end (gl_workaround): deleting it crashed Mesa's llvmpipe."""

    program.delete = delete
    _INSTALLED = True
    return True
