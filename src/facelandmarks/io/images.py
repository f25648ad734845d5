"""Image I/O: photos read as ``(H, W, 3) uint8`` RGB in their raw pixel frame.

EXIF orientation is NOT applied when reading data set photos: 300-W and InfAnFace labels are in the
raw, unrotated frame (``../shared/datasets/README.md``). Uploaded photos (serving, CLI) may ask for
EXIF rotation to be applied, since their predictions are returned in the frame a viewer sees.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = ["ImageReadError", "ImageTooLargeError", "read_image", "decode_image", "write_image", "to_rgb_uint8", "DEFAULT_MAX_PIXELS"]

#: Default limit on width x height of a decoded image (decompression-bomb guard), 40 megapixels.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageReadError(ValueError):
    """A file or upload is not a readable image, or is too large; the message names the source."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than allowed (decompression-bomb guard); HTTP 413 in the service."""


def to_rgb_uint8(arr: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Normalise any decoded image array to ``(H, W, 3) uint8`` RGB.

    Accepts grayscale ``(H, W)`` or ``(H, W, 1)``, RGB, RGBA (alpha dropped, composited on nothing),
    and 16-bit or float images (16-bit scaled by 1/257; float assumed in [0, 1]).

    Raises:
        ImageReadError: an unsupported shape.
    """
    a = np.asarray(arr)
    if a.dtype == np.uint16:
        a = (a.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (a * 255.0).round().clip(0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = a.clip(0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ImageReadError(f"{source}: unsupported image shape {a.shape}")
    return np.ascontiguousarray(a)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo from disk without applying EXIF rotation.

    Args:
        path: image file (JPEG, PNG, PPM, BMP, ...).
        max_pixels: refuse images with more pixels than this.
    Returns:
        ``(H, W, 3) uint8`` RGB.
    Raises:
        ImageReadError: missing, unreadable, or too large; the message names the file and reason.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such file")
    data = np.fromfile(p, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"{p}: empty file")
    return decode_image(data.tobytes(), source=str(p), max_pixels=max_pixels, apply_exif=False)


def decode_image(
    data: bytes,
    source: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    apply_exif: bool = False,
) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, 3) uint8`` RGB.

    The header is read first (Pillow) and the size checked against ``max_pixels`` before any pixel is
    decoded, so decompression bombs are refused cheaply. Grayscale, RGBA, palette and 16-bit images
    are converted to 8-bit RGB.

    Args:
        data: the encoded file.
        source: name used in error messages.
        max_pixels: refuse images with more pixels than this.
        apply_exif: rotate by the EXIF orientation tag (for uploads shown to people).
    Raises:
        ImageReadError: not an image or truncated.
        ImageTooLargeError: more than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLargeError(f"{source}: image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels")
            orientation = im.getexif().get(0x0112, 1) if apply_exif else 1
    except ImageReadError:
        raise
    except Exception as e:  # Pillow raises many types for bad data
        raise ImageReadError(f"{source}: not a readable image ({_reason(e)})") from e
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        # formats OpenCV lacks (e.g. some GIF/palette files): fall back to Pillow
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode in ("P", "LA", "CMYK", "YCbCr", "1"):
                    im = im.convert("RGBA" if "transparency" in im.info or im.mode == "LA" else "RGB")
                rgb = np.asarray(im)
        except Exception as e:
            raise ImageReadError(f"{source}: not a readable image ({_reason(e)})") from e
    else:
        if arr.ndim == 3 and arr.shape[2] == 3:
            rgb = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            rgb = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        else:
            rgb = arr
    rgb = to_rgb_uint8(rgb, source)
    if orientation != 1:
        rgb = _apply_exif_orientation(rgb, orientation)
    return rgb


def _reason(e: Exception) -> str:
    """A library error as a stable, readable reason: Pillow names the in-memory file object (``<_io.BytesIO object
    at 0x...>``), which changes every run and means nothing to the person who sent the file."""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(e)).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _apply_exif_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/mirror a raw-frame image as EXIF orientation tag 0x0112 asks (TIFF 6.0 / EXIF 2.3 spec)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(rgb)) if op else rgb


def write_image(path: str | os.PathLike, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image (format from the suffix).

    Raises:
        OSError: OpenCV could not encode or write it.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(to_rgb_uint8(rgb, str(p)), cv2.COLOR_RGB2BGR)
    ext = p.suffix.lower() if p.suffix else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext if not p.name.endswith(ext + ".tmp") else ext, bgr, params)
    if not ok:
        raise OSError(f"{p}: could not encode image")
    buf.tofile(p)
