"""Odd and broken files: each becomes an upright RGB image or a clear ImageError."""

import io

import numpy as np
import pytest
from PIL import Image

from headshots import images
from headshots.errors import ImageError


def _gradient(w=40, h=20) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (h, 1))] * 3, axis=-1))


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    _gradient(40, 20).save(path, exif=exif)
    assert images.load_rgb(path).size == (20, 40)


def test_a_broken_exif_block_is_read_without_a_warning_among_the_progress_bars(tmp_path, monkeypatch):
    """A phone or an app that wrote a broken EXIF block: the photo opens, and a command says nothing about the
    block (Pillow's "Truncated File Read" / "Possibly corrupt EXIF data" are noise to the person)."""
    import warnings

    from headshots.logs import setup_logging

    exif = Image.Exif()
    exif[0x010E] = "a caption that is cut short" * 8
    path = tmp_path / "broken_exif.jpg"
    _gradient().save(path, exif=exif.tobytes()[:-150])
    for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):  # set by setup_logging: undone after the test
        monkeypatch.setenv(variable, "error")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert images.load_rgb(path).size == (40, 20)
        assert said, "the photo no longer has a broken EXIF block: this test checks nothing"
        said.clear()
        setup_logging()  # as every command starts
        assert images.load_rgb(path).size == (40, 20)
    assert [str(w.message) for w in said] == []


def test_heic_opens_upright(tmp_path):
    """iPhone photos (HEIC) open when the optional pillow-heif is installed (`pip install .[heic]`)."""
    pytest.importorskip("pillow_heif", reason="pillow-heif not installed: HEIC support is the optional `heic` extra")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    _gradient(40, 20).save(tmp_path / "plain.heic", quality=90)
    _gradient(40, 20).save(tmp_path / "rotated.heic", quality=90, exif=exif.tobytes())
    plain, rotated = images.load_rgb(tmp_path / "plain.heic"), images.load_rgb(tmp_path / "rotated.heic")
    assert plain.mode == "RGB" and plain.size == (40, 20) and rotated.size == (20, 40)
    left_to_right = np.asarray(plain.convert("L"), dtype=float).mean(axis=0)
    top_to_bottom = np.asarray(rotated.convert("L"), dtype=float).mean(axis=1)
    assert left_to_right[-1] - left_to_right[0] > 150  # the gradient survived the lossy encode
    assert top_to_bottom[-1] - top_to_bottom[0] > 150  # turned 90 degrees clockwise: dark at the top


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "P", "L", "LA", "I;16"])
def test_odd_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    if mode == "I;16":
        Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(path)
    else:
        _gradient().convert(mode).save(path)
    image = images.load_rgb(path)
    assert image.mode == "RGB"
    if mode == "I;16":  # 16-bit range scaled down, not clipped to white
        assert 0 < np.asarray(image).mean() < 255


def test_alpha_is_flattened_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(path)
    assert np.asarray(images.load_rgb(path)).min() == 255


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"this is text, not a photo", "not an image"),
        ("truncated.jpg", None, r"damaged or truncated\.\n"),  # in plain words, not the decoder's
    ],
)
def test_broken_files_get_a_reason(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        buffer = io.BytesIO()
        _gradient(200, 200).save(buffer, "JPEG")
        content = buffer.getvalue()[:600]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        images.load_rgb(path)
    assert err.value.hint


def test_a_108_megapixel_phone_photo_is_read(tmp_path):
    """Phones save 12000x9000 photos in their high-resolution mode: refused as "too large" at an 80 MP limit."""
    path = tmp_path / "IMG_108MP.jpg"
    Image.new("RGB", (12000, 9000), (180, 150, 130)).save(path, quality=80)
    assert images.load_rgb(path, draft_side=800).size == (1500, 1125)  # decoded at 1/8 scale, as intake does


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 3)  # > 2x the limit is an error in PIL
    with pytest.raises(ImageError, match="too large"):
        images.load_rgb(path)
