"""Decoding dataset images and masks into arrays (scans from users are read in ``models.inference.scan``)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc}); replace or remove the file") from exc


def load_pixels(path: Path) -> tuple[np.ndarray, str]:
    """Decoded pixels and the file's PIL mode.

    An RGB(A) image whose colour channels are identical comes back as one channel, so a
    grayscale re-encoding and the RGB original of the same scan give the same array.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            im.load()
            # Alpha and palettes carry no scan content; 16-bit stays 16-bit.
            if im.mode in ("1", "LA"):
                im = im.convert("L")
            elif im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc}); replace or remove the file") from exc
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., 0]
    return np.ascontiguousarray(arr), mode


def load_gray(path: Path) -> np.ndarray:
    """The scan as a 2-D uint8 array (colour scans are converted to luminance)."""
    arr, _ = load_pixels(path)
    if arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)
    return arr


def load_mask(paths: Iterable[Path], shape: tuple[int, int]) -> np.ndarray:
    """The union of the mask files as a bool array of ``shape`` (height, width).

    An empty ``paths`` gives an all-false mask. A mask of another size is an error, never resized.
    """
    union = np.zeros(shape, dtype=bool)
    for path in paths:
        arr, _ = load_pixels(path)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        if arr.shape != tuple(shape):
            raise ImageReadError(
                f"{path}: mask is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}; "
                "the mask must have the image's exact size"
            )
        union |= arr > 127 if arr.dtype == np.uint8 else arr > 0
    return union


def pixel_digest(arr: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and pixels: the same scan re-encoded hashes the same."""
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of a bool mask, independent of how the mask file was encoded."""
    return pixel_digest(mask.astype(bool))
