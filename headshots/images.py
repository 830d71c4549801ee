"""Reading photos safely: any file a person uploads either becomes an RGB image or a clear reason.

Handles EXIF orientation, colour profiles (Display P3, Adobe RGB, CMYK), 16-bit, alpha, palette and
greyscale; refuses corrupt, truncated, non-image and decompression-bomb files with an `ImageError` that
says what to do.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from headshots.errors import ImageError

# A 108-megapixel phone photo (12000x9000) is read (intake decodes a JPEG that size at a reduced scale); beyond this
# we refuse instead of exhausting memory
MAX_PIXELS = 120_000_000

Image.MAX_IMAGE_PIXELS = MAX_PIXELS

try:  # HEIC (iPhone) support is optional: only if pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    FORMATS = "JPEG, PNG, WebP or HEIC"
except ImportError:  # pragma: no cover - depends on the environment
    FORMATS = "JPEG, PNG or WebP (HEIC with pip install pillow-heif)"


A_FOLDER = "a folder, not a photo."  # the reason a folder among the photos gets
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def load_rgb(path: Path, draft_side: int | None = None) -> Image.Image:
    """Open `path` as an upright 8-bit RGB image, or raise ImageError with the reason.

    With `draft_side`, a JPEG far larger than needed is decoded at a reduced DCT scale (long side
    still >= draft_side): several times faster for phone photos when only a preview-size image is used.
    """
    path = Path(path)
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes of another system's encoding (a Latin-1 name from a zip made on Windows)
        raise ImageError(f"{readable_name(path)}: the file's name is not readable text (made on another system?).",
                         "Rename it with letters, digits, '-' and '_' (e.g. photo-01.jpg).") from exc
    if path.is_dir():
        raise ImageError(f"{path.name}: {A_FOLDER}", "Photos inside a folder are not read: move them out of it, beside the others.")
    if path.is_symlink() and not path.exists():
        raise ImageError(f"{path.name}: a link to a file that is no longer there.", "Put the photo itself here, or remove the link.")
    if not path.is_file():
        raise ImageError(f"{path.name}: not a regular file.", "Upload the photo itself.")
    if path.stat().st_size == 0:
        raise ImageError(f"{path.name}: the file is empty (0 bytes).", "Upload the photo again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if draft_side and image.format == "JPEG" and max(image.size) > draft_side:
                    ratio = draft_side / max(image.size)
                    image.draft(image.mode, (math.ceil(image.width * ratio), math.ceil(image.height * ratio)))
                image.load()
                if image.mode == "1":  # one bit a pixel: a fax-like copy, whose dithering reads as grain, shadow and someone else
                    raise ImageError(f"{path.name}: a 1-bit black-and-white image (a scan or copy, not a photo).",
                                     "Send the original colour photo.")
                return to_rgb(in_srgb(upright(image)))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{path.name}: the image is too large to process safely (over {MAX_PIXELS // 1_000_000} megapixels).",
            f"Resize it below {MAX_PIXELS // 1_000_000} megapixels.",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path.name}: not an image file (or an unsupported format).", f"Upload a {FORMATS} photo.") from exc
    except (ImageError, MemoryError):
        raise
    except Exception as exc:  # any other failure to decode (a damaged TIFF's tags raise TypeError)
        # the decoder's own words ("image file is truncated (8 bytes not processed)") stay in the chained exception (-v)
        raise ImageError(f"{path.name}: the file is damaged or truncated.", "Export or upload the photo again.") from exc


# EXIF orientation -> the turn that makes the photo upright (the tag's values 2-8; 1 and any other: as stored)
ORIENTATION_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                     5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                     8: Image.Transpose.ROTATE_90}


def upright(image: Image.Image) -> Image.Image:
    """The photo turned as its EXIF orientation says. Pillow's exif_transpose also writes the EXIF back without the
    tag, and a tag stored with an unexpected type (which cameras and editors write) made that raise, stopping intake
    and prepare for the whole set (a bad-input probe); only the turn is needed here."""
    try:
        turn = ORIENTATION_TURNS.get(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - an EXIF block that cannot be read says nothing about the turn
        turn = None
    return image.transpose(turn) if turn is not None else image


def readable_name(path: Path) -> str:
    """The file's name as text, bytes no encoding can show written as escapes (\\udce9)."""
    return path.name.encode("utf-8", "backslashreplace").decode("utf-8")


def original_size(path: Path) -> tuple[int, int]:
    """The upright photo's size before any reduced-scale decoding, from its header (EXIF orientations 5-8 swap sides)."""
    with Image.open(path) as image:
        width, height = image.size
        return (height, width) if image.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (width, height)


def named_as_image(path: Path) -> bool:
    """Whether the file's name ends as an image's does (a format Pillow reads), judged before reading it."""
    return path.suffix.lower() in Image.registered_extensions()


def as_the_camera_saved_it(path: Path) -> bool:
    """Whether the file is the camera's own: it names the camera (EXIF Make) and has the pixels the camera recorded
    (EXIF PixelXDimension x PixelYDimension). Chat apps, screenshots and editors that shrink a photo drop its EXIF
    or keep the old size in it, so "send the original" is advice only for a file that is not one."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            recorded = exif.get_ifd(0x8769)  # the Exif IFD
            size = (recorded.get(0xA002), recorded.get(0xA003))
            # either way round: some cameras record the size as shown, some as stored (an orientation tag turns it)
            return bool(str(exif.get(0x010F, "")).strip("\x00 ")) and size in (image.size, image.size[::-1])
    except (OSError, SyntaxError, ValueError):
        return False


def transparent_share(path: Path) -> float:
    """The share of the image that is transparent (alpha below half): a cut-out whose background was removed, which
    `to_rgb` fills with white. 0.0 for an image without an alpha channel (read from the header: no decoding) or one
    that cannot be read (`load_rgb` says why)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
                return 0.0
            alpha = image.convert("RGBA").getchannel("A")
            return float((np.asarray(alpha.reduce(max(1, max(alpha.size) // 256))) < 128).mean())
    except Exception:  # noqa: BLE001 - any failure to read is load_rgb's to report
        return 0.0


def in_srgb(image: Image.Image) -> Image.Image:
    """The photo's colours in sRGB, which SDXL learnt and a viewer assumes of untagged pixels. iPhones and many Android
    phones save in Display P3, cameras often in Adobe RGB, and print files in CMYK, each tagged with its ICC profile:
    read as sRGB, a P3 face's skin is a few ΔE duller and saturated colours far more (a prepare review), and a set
    mixing phones trained two skin tones for one person. The converted image carries no profile (its pixels are
    sRGB now). A profile that cannot be read, or that does not fit the pixels, leaves them as stored."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():  # most photos: nothing to convert
            return image
        converted = ImageCms.profileToProfile(image, profile, SRGB, outputMode="RGBA" if image.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    converted.info.pop("icc_profile", None)
    return converted


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array / _full_scale(image.mode, array) * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _full_scale(mode: str, array: np.ndarray) -> float:
    """The value white has in a one-channel image of `mode`: 65535 in 16 bits, whatever the pixels reach (a dark
    16-bit photo came out 257 times brighter); a float image's 1.0 when it stays within 0..1 (it came out black,
    and was told to find more light), else 255 as 8-bit values in floats; a 32-bit integer image's by its range."""
    if mode.startswith("I;16"):
        return 65535.0
    top = float(array.max()) if array.size else 0.0
    if mode == "F" and top <= 1.0:
        return 1.0
    return 255.0 if top <= 255 else 65535.0 if top <= 65535 else top


def list_photos(folder: Path) -> list[Path]:
    """Every entry of `folder` (sorted), so that nothing is silently skipped; hidden files excluded."""
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))


def jpeg_data_uri(image: Image.Image, quality: int = 85) -> str:
    """`image` as a JPEG `data:` URI, for a page that must never be given a file path (intake.html, the web app)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
