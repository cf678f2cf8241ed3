"""A corpus of broken and odd input files, generated deterministically (no binary blobs in
git). ``build(folder)`` writes it and returns ``{name: expectation}``: ``None`` for files that
must be read, else a phrase the reader's error message must contain. The files in :data:`BLANK`
read well but show nothing to segment: ``predict`` refuses them."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from napari_lesionseg.core.bundled import sample_paths

#: read well, refused by predict: a one-colour image, a failed (black) capture
BLANK = ("one_pixel.png", "black_capture.jpg")


def _photo(scale: int = 8) -> Image.Image:
    im = Image.open(sample_paths("idrid_16")[0])
    return im.resize((im.width // scale, im.height // scale), Image.Resampling.BOX)


def build(folder: Path) -> dict[str, str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    rgb = np.asarray(photo)
    expect: dict[str, str | None] = {}

    def put(name: str, data: bytes, expectation: str | None) -> None:
        (folder / name).write_bytes(data)
        expect[name] = expectation

    def enc(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        return buf.getvalue()

    put("empty.jpg", b"", "file is empty")
    full = enc(photo, "JPEG", quality=90)
    put("truncated.jpg", full[: len(full) // 2], "truncated or corrupt")
    put("not_an_image.jpg", b"just some text that is not a picture\n" * 10, "not a recognised image")
    put("png_named.jpg", enc(photo, "PNG"), None)
    put("cmyk.jpg", enc(photo.convert("CMYK"), "JPEG"), None)
    t16 = io.BytesIO()
    tifffile.imwrite(t16, (rgb.astype(np.uint16) * 257), photometric="rgb")
    put("rgb16.tif", t16.getvalue(), None)
    tnan = io.BytesIO()
    f = rgb[..., 1].astype(np.float32) / 255
    f[5, 5] = np.nan
    tifffile.imwrite(tnan, f)
    put("float_nan.tif", tnan.getvalue(), "NaN")
    put("gray.png", enc(photo.convert("L"), "PNG"), None)
    put("rgba.png", enc(photo.convert("RGBA"), "PNG"), None)
    put("palette.png", enc(photo.convert("P"), "PNG"), None)
    put("one_pixel.png", enc(Image.new("RGB", (1, 1), (120, 40, 20)), "PNG"), None)
    put("black_capture.jpg", enc(Image.new("RGB", photo.size, (0, 0, 0)), "JPEG", quality=90), None)
    put("wide_strip.png", enc(Image.fromarray(np.tile(rgb[rgb.shape[0] // 2: rgb.shape[0] // 2 + 8], (1, 6, 1))), "PNG"),
        None)
    bomb = bytearray(enc(Image.new("L", (1, 1)), "PNG"))
    bomb[16:24] = (200_000).to_bytes(4, "big") + (200_000).to_bytes(4, "big")
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    put("bomb.png", bytes(bomb), "too large")
    (folder / "a_folder.jpg").mkdir()
    expect["a_folder.jpg"] = "directory"
    return expect


def build_masks(folder: Path, image_shape: tuple[int, int]) -> dict[str, str | None]:
    """Masks for ``read_mask(path, shape=image_shape)``."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = image_shape
    m = np.zeros((h, w), np.uint8)
    m[10:20, 10:30] = 1
    out: dict[str, str | None] = {}
    Image.fromarray(m * 255).save(folder / "ok_0255.png")
    out["ok_0255.png"] = None
    Image.fromarray(m).save(folder / "ok_01.png")
    out["ok_01.png"] = None
    Image.fromarray(np.zeros((h + 3, w), np.uint8)).save(folder / "wrong_size.png")
    out["wrong_size.png"] = "but its image is"
    odd = m.copy()
    odd[0, 0] = 128
    Image.fromarray(odd).save(folder / "odd_values.png")
    out["odd_values.png"] = "0/1/255"
    Image.fromarray(m * 255).save(folder / "lossy.jpg", quality=90)
    out["lossy.jpg"] = "lossless"
    return out
