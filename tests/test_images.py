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


def test_a_rotation_beside_a_tag_of_an_unexpected_type_is_applied(tmp_path):
    """Pillow's exif_transpose writes the EXIF back and raised struct.error on a tag stored with another type than
    the standard's (here MaxSampleValue as a RATIONAL), stopping intake and prepare for the whole set (a probe)."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x011A] = 6, "Cam", 72.0  # XResolution: a RATIONAL
    raw = exif.tobytes()
    assert raw.count(b"\x01\x1a\x00\x05") == 1
    path = tmp_path / "odd_exif.jpg"
    _gradient(40, 20).save(path, exif=raw.replace(b"\x01\x1a\x00\x05", b"\x01\x19\x00\x05"))  # its id -> 0x0119
    from PIL import ImageOps

    with pytest.raises(Exception):  # noqa: B017 - what Pillow does: the file is what this test says it is
        ImageOps.exif_transpose(Image.open(path))
    turned = images.load_rgb(path)
    assert turned.size == (20, 40)
    top_to_bottom = np.asarray(turned.convert("L"), dtype=float).mean(axis=1)
    assert top_to_bottom[-1] - top_to_bottom[0] > 150  # 90 degrees clockwise, as the tag says: dark at the top


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_the_photo_as_pillow_does(tmp_path, orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    picture = Image.fromarray(np.random.default_rng(orientation).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    path = tmp_path / f"o{orientation}.png"
    picture.save(path, exif=exif)
    assert np.array_equal(np.asarray(images.load_rgb(path)), np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")))


def test_a_name_of_another_systems_encoding_is_a_reason_to_rename_not_a_traceback(tmp_path):
    """A Latin-1 file name (a zip made on Windows) is no UTF-8: hashing the photos, writing intake.json and the
    dataset raised UnicodeEncodeError (a bad-input probe)."""
    import json
    import os

    from headshots.workspace import write_json_atomic

    path = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    _gradient().save(path)
    with pytest.raises(ImageError, match=r"caf\\udce9.jpg: the file's name is not readable text") as refused:
        images.load_rgb(path)
    assert "Rename it" in refused.value.hint
    write_json_atomic(tmp_path / "report.json", {"file": path.name, "said": "café"})
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == {"file": path.name, "said": "café"}


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


def test_each_one_channel_depth_is_scaled_by_its_own_white(tmp_path):
    """A 0..1 float image came out black (and was told to find more light); a dark 16-bit one, all under 256, came
    out 257 times brighter (a bad-input probe)."""
    ramp = np.linspace(0, 1, 400).reshape(20, 20)
    for name, array, mode in (("float.tif", ramp.astype(np.float32), "F"), ("dark16.png", (ramp * 200).astype(np.uint16), "I;16")):
        Image.fromarray(array, mode).save(tmp_path / name)
    assert abs(np.asarray(images.load_rgb(tmp_path / "float.tif")).mean() - 127.5) < 2
    assert np.asarray(images.load_rgb(tmp_path / "dark16.png")).max() <= 1  # 200 of 65535: near black, as it is


def test_a_one_bit_image_is_named_as_such(tmp_path):
    """Dithered black and white read as "someone else" and "too little light" (a bad-input probe)."""
    _gradient().convert("1").save(tmp_path / "fax.png")
    with pytest.raises(ImageError, match="a 1-bit black-and-white image") as refused:
        images.load_rgb(tmp_path / "fax.png")
    assert refused.value.hint == "Send the original colour photo."


def test_a_broken_link_among_the_photos_is_named_as_one(tmp_path):
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")
    with pytest.raises(ImageError, match="gone.jpg: a link to a file that is no longer there"):
        images.load_rgb(tmp_path / "gone.jpg")


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


def wide_gamut_profile() -> bytes:
    """A minimal ICC v2 display profile: Display P3's primaries (adapted to D50) and a 2.2 gamma, as a phone tags
    its photos (no such profile ships with Pillow or this machine)."""
    import struct

    def fixed(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(*values: float) -> bytes:
        return b"XYZ " + bytes(4) + fixed(*values)

    name = b"Display P3 (test)\x00"
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(8 + 2 + 1 + 67)),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)), (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(28) + fixed(0.9642, 1.0, 0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


def test_a_wide_gamut_photo_is_read_in_srgb(tmp_path, faces_dir):
    """A phone's Display P3 photo: its pixels are P3 values, which read as sRGB gave duller skin and colours (a prepare
    review). Read, it gives the sRGB colours it was made from, untagged; an unreadable profile leaves the pixels be."""
    from PIL import ImageCms

    photo = images.load_rgb(faces_dir / "georgia-tech" / "s01" / "01.jpg")
    photo.paste((200, 30, 30), (0, 0, 60, 60))  # a saturated red, where the gamuts differ most
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(wide_gamut_profile()))
    stored = ImageCms.profileToProfile(photo, ImageCms.createProfile("sRGB"), p3, outputMode="RGB")
    stored.save(tmp_path / "phone.png", icc_profile=wide_gamut_profile())
    as_stored, read = np.asarray(stored).astype(int), images.load_rgb(tmp_path / "phone.png")
    original = np.asarray(photo).astype(int)
    assert np.abs(as_stored - original).max() >= 20  # what ignoring the profile trained on
    assert np.abs(np.asarray(read).astype(int) - original).max() <= 3 and "icc_profile" not in read.info

    cut_out = stored.convert("RGBA")  # a phone's cut-out: converted too, its transparency still flattened on white
    cut_out.paste((0, 0, 0, 0), (0, stored.height - 40, stored.width, stored.height))
    cut_out.save(tmp_path / "cut-out.png", icc_profile=wide_gamut_profile())
    read = np.asarray(images.load_rgb(tmp_path / "cut-out.png")).astype(int)
    assert np.abs(read[:-40] - original[:-40]).max() <= 3 and (read[-40:] == 255).all()

    stored.save(tmp_path / "broken.png", icc_profile=b"not a profile")
    assert (np.asarray(images.load_rgb(tmp_path / "broken.png")).astype(int) == as_stored).all()
