"""Image and mask IO: formats, bit depths, orientation, bad files, lossless-only labels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_lesionseg.core.bundled import sample_paths
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.image_io import read_image, read_mask, write_label


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
def test_lossless_rgb_roundtrip(tmp_path: Path, ext: str) -> None:
    a = _rgb()
    p = tmp_path / f"x.{ext}"
    Image.fromarray(a).save(p)
    b, meta = read_image(p)
    assert b.dtype == np.uint8 and b.shape == (20, 30, 3)
    np.testing.assert_array_equal(a, b)
    assert (meta.width, meta.height) == (30, 20) and len(meta.sha256) == 64


def test_jpeg_sample_reads(tmp_path: Path) -> None:
    rgb, meta = read_image(sample_paths("idrid_04")[0])
    assert rgb.shape == (1424, 2144, 3) and meta.format == "JPEG"


def test_gray_rgba_palette_and_cmyk(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a[..., 0]).save(tmp_path / "g.png")
    g, _ = read_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and (g[..., 0] == a[..., 0]).all() and (g[..., 2] == a[..., 0]).all()
    rgba = np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0], a)
    # a fundus cut out with a transparent surround, white under it: the surround reads black (the
    # white was taken for retina: 15 of a photo's 25 lesions found), the rest as it is
    rgba[:5, :, :3], rgba[:5, :, 3] = 255, 0
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    cut = read_image(tmp_path / "cut.png")[0]
    assert (cut[:5] == 0).all() and np.array_equal(cut[5:], a[5:])
    Image.fromarray(np.dstack([a, np.zeros(a.shape[:2], np.uint8)])).save(tmp_path / "unused.png")
    np.testing.assert_array_equal(read_image(tmp_path / "unused.png")[0], a)  # alpha 0 throughout: unused
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    p, _ = read_image(tmp_path / "p.png")
    assert p.shape == (20, 30, 3)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg")
    c, meta = read_image(tmp_path / "c.jpg")
    assert c.shape == (20, 30, 3) and meta.mode == "RGB"


def test_16bit_gray_and_rgb_tiff(tmp_path: Path) -> None:
    g16 = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    tifffile.imwrite(tmp_path / "g16.tif", g16)
    g, meta = read_image(tmp_path / "g16.tif")
    assert g.dtype == np.uint8 and meta.bit_depth == 16
    np.testing.assert_array_equal(g[..., 0], np.rint(g16 / 257.0).astype(np.uint8))
    rgb16 = (_rgb().astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    r, _ = read_image(tmp_path / "rgb16.tif")
    np.testing.assert_array_equal(r, _rgb())


def test_float_tiff_and_nan(tmp_path: Path) -> None:
    f = np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)
    tifffile.imwrite(tmp_path / "f.tif", f)
    g, _ = read_image(tmp_path / "f.tif")
    assert g[0, 0, 0] == 0 and g[-1, -1, 0] == 255
    f[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with pytest.raises(LesionsegInputError, match="NaN"):
        read_image(tmp_path / "nan.tif")



def test_a_colour_float_tiff_pillow_cannot_open_reads(tmp_path: Path) -> None:
    """An RGB float32 TIFF (a scientific pipeline's export) is TIFF all the same: Pillow cannot
    open it, tifffile can; it once read as "not a recognised image file". A sample type that is
    no picture (complex) is a clear error naming the file."""
    from napari_lesionseg.core.image_io import decodable

    tifffile.imwrite(tmp_path / "rgbf.tif", _rgb().astype(np.float32) / 255.0, photometric="rgb")
    rgb, meta = read_image(tmp_path / "rgbf.tif")
    np.testing.assert_array_equal(rgb, _rgb())
    assert meta.format == "TIFF" and meta.bit_depth == 32 and decodable(tmp_path / "rgbf.tif")
    tifffile.imwrite(tmp_path / "c.tif", _rgb().astype(np.complex64), photometric="rgb")
    with pytest.raises(LesionsegInputError, match=r"c\.tif.*sample type complex64"):
        read_image(tmp_path / "c.tif")


def test_exif_orientation_applied(tmp_path: Path) -> None:
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :5] = 255  # white band on the left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "o.jpg"
    im.save(p, exif=exif, quality=100)
    b, meta = read_image(p)
    assert meta.exif_orientation == 6
    assert b.shape == (20, 10, 3)
    assert b[:5].mean() > 200 and b[-5:].mean() < 50  # the left band is now on top


def test_a_phones_heic_photo_reads_and_without_the_plugin_is_said(tmp_path: Path, monkeypatch) -> None:
    """A HEIC photo (an iPhone's default) was refused ("not read here"): read through the
    optional pillow-heif (the ``heic`` extra, installed with ``testing``), turned upright as a
    JPEG with the same EXIF orientation; a broken one is a line naming it; without the plugin
    the line says how to get it."""
    import pillow_heif  # noqa: F401 - the testing extra installs it: this test must not skip

    from napari_lesionseg.core import image_io

    photo = Image.open(sample_paths("idrid_04")[0]).convert("RGB").resize((268, 178))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    image_io.heif_ready()  # registers the plugin with Pillow, so Pillow can write one here
    photo.save(tmp_path / "eye.heic", quality=95, exif=exif.tobytes())
    photo.save(tmp_path / "eye.jpg", quality=95, exif=exif.tobytes())
    rgb, meta = read_image(tmp_path / "eye.heic")
    ref, _ = read_image(tmp_path / "eye.jpg")
    assert meta.format == "HEIF" and rgb.shape == ref.shape == (268, 178, 3)
    assert np.abs(rgb.astype(int) - ref.astype(int)).mean() < 4  # two lossy codecs of one photo
    data = (tmp_path / "eye.heic").read_bytes()
    (tmp_path / "cut.heic").write_bytes(data[: len(data) // 2])
    with pytest.raises(LesionsegInputError, match=r"cut\.heic: image data is truncated or corrupt"):
        read_image(tmp_path / "cut.heic")
    monkeypatch.setattr(image_io, "heif_ready", lambda: False)
    with pytest.raises(LesionsegInputError, match=r'eye\.heic: a HEIC/HEIF photo .*pip install "napari-lesionseg\[heic\]"'):
        read_image(tmp_path / "eye.heic")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not a recognised image"),
        (lambda p: p.mkdir(), "directory"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path: Path, make, message: str) -> None:
    p = tmp_path / "bad.jpg"
    make(p)
    with pytest.raises(LesionsegInputError, match=message) as info:
        read_image(p)
    assert str(p) in str(info.value)


def test_missing_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(LesionsegInputError, match="no such file"):
        read_image(tmp_path / "nope.png")
    data = sample_paths("idrid_16")[0].read_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(LesionsegInputError, match="truncated|corrupt") as info:
        read_image(p)
    assert "trunc.jpg" in str(info.value)


def test_pixel_limit_and_bomb_header(tmp_path: Path) -> None:
    Image.fromarray(_rgb(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(LesionsegInputError, match="over the limit"):
        read_image(tmp_path / "big.png", max_pixels=5000)
    # a PNG whose header claims 100000 x 100000 pixels: refused before any decoding
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    import zlib

    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(raw))
    with pytest.raises(LesionsegInputError, match="too large|over the limit") as info:
        read_image(tmp_path / "bomb.png")
    assert "bomb.png" in str(info.value)


def test_masks_encodings(tmp_path: Path) -> None:
    m = np.zeros((8, 9), np.uint8)
    m[2:4, 3:6] = 1
    Image.fromarray(m).save(tmp_path / "01.png")
    Image.fromarray(m * 255).save(tmp_path / "0255.png")
    pal = Image.fromarray(m, mode="L").convert("P")
    pal.save(tmp_path / "pal.tif")
    Image.fromarray(m.astype(bool)).save(tmp_path / "bit.tif")
    for name in ("01.png", "0255.png", "bit.tif"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), m, err_msg=name)
    lab = m.copy()
    lab[0, 0] = 255
    Image.fromarray(lab).save(tmp_path / "lab.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "lab.png"), lab)


def test_masks_with_an_alpha_channel(tmp_path: Path) -> None:
    """A gray mask saved with alpha (an image editor's LA PNG) was a traceback (IndexError in the
    colour check); lesions painted white on a transparent layer over white were read as all
    lesion (the inverted-mask refusal). Clear pixels are background."""
    m = np.zeros((8, 9), np.uint8)
    m[2:4, 3:6] = 1
    la = np.stack([m * 255, np.full_like(m, 255)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    layer = np.full((8, 9, 4), 255, np.uint8)
    layer[..., 3] = m * 255  # white everywhere; only the lesions opaque
    Image.fromarray(layer, mode="RGBA").save(tmp_path / "layer.png")
    for name in ("la.png", "layer.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), m, err_msg=name)


def test_cmyk_and_reordered_palette_masks(tmp_path: Path) -> None:
    """A CMYK mask (C, M and Y all 0, the mask in K) was read as empty: evaluate scored its photo as
    healthy. A palette mask whose editor put the lesion colour at index 0 and black at 1 was
    refused as inverted. Black is background, whatever its index."""
    m = np.zeros((8, 9), np.uint8)
    m[2:4, 3:6] = 1
    Image.fromarray(m * 255).convert("CMYK").save(tmp_path / "cmyk.tif")
    pal = Image.fromarray(1 - m, mode="L").convert("P")
    pal.putpalette([200, 10, 10, 0, 0, 0])
    pal.save(tmp_path / "red_first.png")
    for name in ("cmyk.tif", "red_first.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), m, err_msg=name)


def test_idrid_style_palette_mask_from_sample() -> None:
    img, mask = sample_paths("idrid_04")
    m = read_mask(mask, shape=(1424, 2144))
    assert set(np.unique(m)) == {0, 1}


def test_bad_masks(tmp_path: Path) -> None:
    m = np.zeros((8, 9), np.uint8)
    m[1, 1] = 7
    Image.fromarray(m).save(tmp_path / "odd.png")  # one value besides 0: says what to save instead
    with pytest.raises(LesionsegInputError, match="only 0 and 7; lesions must be 255 or 1.*save the mask with 7 as 255"):
        read_mask(tmp_path / "odd.png")
    m[2, 2] = 1
    Image.fromarray(m).save(tmp_path / "odd.png")
    with pytest.raises(LesionsegInputError, match=r"values other than 0/1/255 \(0, 1, 7\)"):
        read_mask(tmp_path / "odd.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(LesionsegInputError, match="mask is 9x8 but its image is 10x8"):
        read_mask(tmp_path / "m.png", shape=(8, 10))
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(LesionsegInputError, match="lossless"):
        read_mask(tmp_path / "m.jpg")
    red = np.zeros((8, 9, 3), np.uint8)
    red[1:3, 2:4] = (255, 0, 0)  # lesions drawn in red: how to save it, not a guess
    Image.fromarray(red).save(tmp_path / "red.png")
    with pytest.raises(LesionsegInputError, match=r"black and one colour \(255, 0, 0\).*one channel \(gray\) with lesions 255"):
        read_mask(tmp_path / "red.png")
    red[5, 5] = (0, 255, 0)
    Image.fromarray(red).save(tmp_path / "red.png")
    with pytest.raises(LesionsegInputError, match="colour image with differing channels"):
        read_mask(tmp_path / "red.png")


def test_write_label_lossless_only(tmp_path: Path) -> None:
    lab = np.zeros((5, 6), np.uint8)
    lab[1:3, 2:4] = 1
    lab[4, 5] = 255
    write_label(tmp_path / "l.png", lab)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), lab)
    write_label(tmp_path / "l.tif", lab)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.tif"), lab)
    with pytest.raises(LesionsegInputError, match="lossless only"):
        write_label(tmp_path / "l.jpg", lab)
    assert not (tmp_path / "l.jpg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.png", "l.tif"]  # no temp files left


@pytest.mark.parametrize("backend", ["isal", "zlib"])
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (40, 31, 3), (600, 700)])
def test_encode_png_roundtrips_through_pillow(shape: tuple[int, ...], backend: str, monkeypatch) -> None:
    """With ISA-L's deflate (what installs on the common platforms) and the standard zlib
    fallback, Pillow reads back the same pixels."""
    import io
    import zlib

    from PIL import Image

    import napari_lesionseg.core.image_io as image_io
    from napari_lesionseg.core.image_io import encode_png

    if backend == "zlib":
        monkeypatch.setattr(image_io, "_deflate", zlib)
    else:
        assert image_io._deflate.__name__.endswith("isal_zlib")
    a = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    if a.size > 10_000:  # a map-like array: mostly zeros with a smooth patch
        a[:] = 0
        a[100:300, 200:500] = np.add.outer(np.arange(200), np.arange(300)) % 256
    back = np.asarray(Image.open(io.BytesIO(encode_png(a))))
    assert back.dtype == np.uint8 and back.shape == a.shape and np.array_equal(back, a)
    if a.ndim == 2:  # 16-bit gray (the fuzzy map; written with PNG's "sub" filter)
        a16 = a.astype(np.uint16) * 257 + np.random.default_rng(2).integers(0, 257, size=a.shape, dtype=np.uint16)
        back = np.asarray(Image.open(io.BytesIO(encode_png(a16))))
        assert back.shape == a.shape and np.array_equal(back.astype(np.int64), a16.astype(np.int64))
    else:
        with pytest.raises(ValueError, match="uint16 \\(H, W\\)"):
            encode_png(a.astype(np.uint16))


def test_unit_maps_read_back_at_their_precision(tmp_path: Path) -> None:
    """The fuzzy map is written in 16 bits (distinct values stay distinct), the probability in
    8; ``read_unit_map`` reads both (and older 8-bit fuzzy maps) as [0, 1] floats."""
    from napari_lesionseg.core.image_io import read_unit_map
    from napari_lesionseg.core.outputs import write_maps

    f = np.linspace(0, 1, 100 * 120, dtype=np.float32).reshape(100, 120)
    write_maps(tmp_path, "x", f, f > 0.5, f)
    fuzzy, prob = read_unit_map(tmp_path / "x_fuzzy.png"), read_unit_map(tmp_path / "x_prob.png")
    assert np.abs(fuzzy - f).max() <= 0.5 / 65535 + 1e-7 and len(np.unique(fuzzy)) == f.size
    assert np.abs(prob - f).max() <= 0.5 / 255 + 1e-7 and len(np.unique(prob)) == 256
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(LesionsegInputError, match="rgb.png"):
        read_unit_map(tmp_path / "rgb.png")


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    """Outputs are readable like any file the user writes (mkstemp's temp files are 0600), and
    replacing a file keeps its mode."""
    import os
    import stat

    from napari_lesionseg.core.atomic import atomic_write_bytes, ordinary_mode

    new = tmp_path / "new.png"
    atomic_write_bytes(new, b"x")
    assert stat.S_IMODE(new.stat().st_mode) == ordinary_mode()
    kept = tmp_path / "kept.csv"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o640)
    atomic_write_bytes(kept, b"new")
    assert kept.read_bytes() == b"new" and stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_model_folders_and_saved_corrections_get_ordinary_permissions(tmp_path: Path, tiny_model_dir: Path) -> None:
    import stat

    from napari_lesionseg.core.atomic import ordinary_mode
    from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
    from napari_lesionseg.core.store import Project

    m = load_model_folder(tiny_model_dir)
    out = save_model_folder(tmp_path / "m2", m.net, m.config)
    assert stat.S_IMODE(out.stat().st_mode) == ordinary_mode(directory=True)
    proj = Project(tmp_path / "proj")
    img = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    iid = proj.add_image(img)
    v = proj.save_label(iid, np.zeros((8, 8), np.uint8))
    for f in (proj.image_path(iid), v.path):
        assert stat.S_IMODE(Path(f).stat().st_mode) == ordinary_mode(), f
