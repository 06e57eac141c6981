"""Reading a user's scan: PNG, JPEG, BMP, TIFF, WebP and DICOM into a typed ``Scan``.

Every way a file can be unusable ends in ``ScanError`` with a ``kind`` and a message a person can
act on; nothing else escapes. Pixel spacing comes from DICOM's ultrasound region calibration when
present (else ``PixelSpacing``), so measurements can be given in mm. When the file holds a frame around the
scan (a screen capture: text, scales, colour bars), ``Scan.region`` is the imaging region the models read, from
the DICOM ultrasound region or found in the pixels (``models.field_of_view``).
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.field_of_view import Region, checked, find_region

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 40_000_000  # ~6300 x 6300; ultrasound frames are far smaller
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "MPO", "DICOM")
CM_UNITS = 3  # DICOM PhysicalUnitsXDirection: 3 = cm
MAX_ASPECT = 8.0  # width / height (or height / width): ultrasound frames are 1:1 to 2:1, panoramic views ~4:1
SPACING_MM = (1e-3, 10.0)  # a plausible pixel size; outside it a calibration is refused and measures stay in pixels
REGION_2D = 1  # DICOM RegionSpatialFormat: 1 = 2D tissue or flow


class ScanError(ValueError):
    """A scan that cannot be read; ``kind`` is one of empty, too_large, not_image, truncated,
    unsupported, multiframe, compressed_dicom, bad_frame, no_pixels, bad_shape, bad_header."""

    def __init__(self, kind: str, name: str, message: str):
        self.kind = kind
        self.name = name
        super().__init__(f"{name}: {message}")


@dataclass(frozen=True)
class Scan:
    name: str  # the file's base name, for display and export
    gray: np.ndarray  # (H, W) uint8: what the models see
    display: np.ndarray  # (H, W, 3) uint8 RGB: what the person sees (colour annotations kept)
    sha256: str  # of the file's bytes
    format: str  # "PNG", "JPEG", ..., "DICOM"
    mode: str  # the stored pixel layout, e.g. "L", "RGB", "I;16", "MONOCHROME2 16-bit"
    spacing_mm: tuple[float, float] | None = None  # (row, column) size of one pixel in mm
    spacing_source: str | None = None  # "ultrasound region", "PixelSpacing"
    frame: int | None = None
    spacing_refused: str | None = None  # why a calibration in the file was not used (measurements in pixels)
    region: Region | None = None  # the imaging region the models read when the file holds a frame around it

    @property
    def model_view(self) -> np.ndarray:
        """What the models read: the imaging region, or the whole scan when there is no frame."""
        return self.to_view(self.gray)

    def to_view(self, image: np.ndarray) -> np.ndarray:
        """A whole-scan array (a mask, a map) cut to what the models read."""
        return self.region.crop(image) if self.region else image

    def place(self, values: np.ndarray) -> np.ndarray:
        """An array of what the models read back at the whole scan's size (zero in a capture's frame)."""
        return self.region.paste(values, self.shape) if self.region else values

    @property
    def shape(self) -> tuple[int, int]:
        return self.gray.shape  # type: ignore[return-value]


def safe_stem(name: str, limit: int = 60) -> str:
    """A file-name stem with no path, no separators and no leading dot, from any upload name."""
    stem = Path(str(name).replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem.lstrip(".") else stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_.")[:limit]
    return stem or "scan"


def _to_uint8(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Deeper-than-8-bit pixels to uint8: by the stored bit depth when known, else by their own range."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    if bits:
        return np.clip(a * (255.0 / (2 ** bits - 1)), 0, 255).astype(np.uint8)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) * (255.0 / max(hi - lo, 1e-9))).astype(np.uint8)


def _views(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gray, display RGB) from a decoded (H, W) or (H, W, 3) uint8 array."""
    if arr.ndim == 2:
        return arr, np.repeat(arr[..., None], 3, axis=2)
    rgb = arr[..., :3]
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    return gray, rgb


def _refuse_odd_shape(name: str, w: int, h: int) -> None:
    """Refuse, before decoding where the header tells, a size no scan has: work is bounded by the shape
    (an 8 x 5,000,000 strip passes the pixel limit, and drawing on it stalls the server)."""
    if min(w, h) >= 1 and max(w, h) > MAX_ASPECT * min(w, h):
        raise ScanError("bad_shape", name, f"{w}x{h} pixels is not the shape of a scan (more than {MAX_ASPECT:g} "
                                           "times as wide as high or the reverse); crop the image to the scan")


def _read_raster(data: bytes, name: str) -> tuple[np.ndarray, str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt, mode = im.format or "?", im.mode
            if fmt not in FORMATS:
                raise ScanError("unsupported", name, f"{fmt} images are not supported; save it as PNG or JPEG")
            w, h = im.size
            _refuse_odd_shape(name, w, h)
            if w * h > MAX_PIXELS:
                raise ScanError("too_large", name, f"{w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit; "
                                                   "downscale the image or crop it to the scan")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:  # multi-page TIFF, animated PNG/WebP: reading the first silently could be the wrong one
                raise ScanError("multiframe", name, f"{frames} images in one {fmt} file; save the frame to read as an "
                                                    "image of its own")
            im = ImageOps.exif_transpose(im)
            im.load()
    except ScanError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ScanError("too_large", name, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ScanError("not_image", name, "not an image PNG, JPEG, BMP, TIFF, WebP or DICOM can be read from; "
                                           "check the file") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ScanError("truncated", name, f"the image data is corrupt or truncated ({exc}); export it again") from exc
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(im))
    elif im.mode in ("L", "RGB"):
        arr = np.asarray(im)
    elif im.mode in ("1", "LA"):
        arr = np.asarray(im.convert("L"))
    else:  # P, PA, RGBA, CMYK, YCbCr: alpha and palettes carry no scan content
        arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        arr = arr[..., 0]
    return arr, fmt, mode


def _is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _regions_2d(ds) -> list:
    """The header's 2D (tissue or flow) ultrasound regions."""
    return [r for r in ds.get("SequenceOfUltrasoundRegions", []) if r.get("RegionSpatialFormat") == REGION_2D]


def _bounds(r) -> tuple:
    """A region's (MinY0, MaxY1, MinX0, MaxX1), None where the header leaves one out."""
    return tuple(r.get(k) for k in ("RegionLocationMinY0", "RegionLocationMaxY1", "RegionLocationMinX0",
                                    "RegionLocationMaxX1"))


def _area(bounds: tuple) -> float:
    y0, y1, x0, x1 = (v or 0 for v in bounds)
    return (y1 - y0) * (x1 - x0)


def _region_spacing(ds) -> tuple[float, float] | None:
    regions = [r for r in _regions_2d(ds) if r.get("PhysicalUnitsXDirection") == CM_UNITS
               and r.get("PhysicalUnitsYDirection") == CM_UNITS and r.get("PhysicalDeltaX") and r.get("PhysicalDeltaY")]
    if not regions:
        return None
    best = max(regions, key=lambda r: _area(_bounds(r)))
    return float(best.PhysicalDeltaY) * 10.0, float(best.PhysicalDeltaX) * 10.0


def _dicom_region(ds, shape: tuple[int, int]) -> Region | None:
    """The largest 2D ultrasound region of the header, when it leaves a frame out of the image."""
    boxes = [tuple(int(v) for v in b) for b in map(_bounds, _regions_2d(ds)) if None not in b]
    boxes = [b for b in boxes if b[0] < b[1] and b[2] < b[3]]
    if not boxes:
        return None
    y0, y1, x0, x1 = max(boxes, key=_area)
    return checked(y0, y1 + 1, x0, x1 + 1, shape, "DICOM ultrasound region")  # the header's maxima are inclusive


def _decoder_available(syntax) -> bool:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):  # a transfer syntax pydicom has no decoder for at all
        return False


def frame_count(source: str | Path | bytes) -> int:
    """How many frames the file holds (a cine DICOM loop: several), from its header alone; 1 for anything
    that is not a readable multi-frame DICOM (``read_scan`` says what is wrong with it)."""
    import pydicom

    try:
        with open(source, "rb") if isinstance(source, (str, Path)) else io.BytesIO(source) as fh:
            if fh.read(132)[128:132] != b"DICM":
                return 1
            fh.seek(0)
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001 - an unreadable header is read_scan's to report
        return 1


def _read_dicom(data: bytes, name: str, frame: int | None
                ) -> tuple[np.ndarray, str, tuple | None, str | None, int | None, Region | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ScanError("truncated", name, f"the DICOM file cannot be parsed ({exc}); export it again") from exc
    if "PixelData" not in ds:
        raise ScanError("no_pixels", name, "the DICOM file holds no image (no PixelData); export the image itself")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _refuse_odd_shape(name, cols, rows)
    if rows * cols > MAX_PIXELS:
        raise ScanError("too_large", name, f"{cols}x{rows} pixels is over the {MAX_PIXELS:,}-pixel limit")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and frame is None:
        raise ScanError("multiframe", name, f"a cine loop of {frames} frames; choose the frame to read (0-{frames - 1})")
    if frame is not None and not 0 <= frame < frames:
        raise ScanError("bad_frame", name, f"frame {frame} does not exist; this file has frames 0-{frames - 1}")
    try:
        arr = ds.pixel_array if frames == 1 else pixel_array(ds, index=frame)  # one frame decoded, not the loop
    except Exception as exc:  # noqa: BLE001 - each decoder plugin raises its own kinds
        syntax = ds.file_meta.get("TransferSyntaxUID", "?")
        if not getattr(syntax, "is_compressed", False):
            if isinstance(exc, ValueError):  # raw pixels shorter or longer than the header says
                raise ScanError("truncated", name, f"the DICOM pixel data cannot be read ({exc}); export it again") from exc
            raise  # a header that contradicts itself: read_scan's bad_header
        if not _decoder_available(syntax):
            raise ScanError("compressed_dicom", name, f"compressed as {getattr(syntax, 'name', syntax)}, for which no "
                            "decoder is installed; install pylibjpeg with its plugins, or export it uncompressed") from exc
        raise ScanError("truncated", name, f"the DICOM pixel data ({getattr(syntax, 'name', syntax)}) is corrupt and "
                        f"cannot be decoded ({str(exc).splitlines()[-1].strip()}); export it again") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric.startswith("MONOCHROME"):
        # The DICOM pipeline: stored values -> modality LUT (RescaleSlope/Intercept) -> VOI (window) -> display.
        # Signed or rescaled values are mapped by their own range; unsigned raw ones by their bit depth.
        rescaled = int(ds.get("PixelRepresentation", 0) or 0) == 1 or "RescaleSlope" in ds or "ModalityLUTSequence" in ds
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64) if rescaled else arr
        if rescaled and (not np.isfinite(values).all() or float(ds.get("RescaleSlope", 1) or 0) == 0):
            raise ScanError("bad_header", name, f"the modality LUT (RescaleSlope {ds.get('RescaleSlope')}, RescaleIntercept "
                                                f"{ds.get('RescaleIntercept')}) leaves no image; export the image again")
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = _to_uint8(np.asarray(apply_voi_lut(values, ds), dtype=np.float64))
        elif rescaled:
            arr = _to_uint8(values)
        else:
            arr = _to_uint8(arr, bits if arr.dtype != np.uint8 else None)
        if photometric == "MONOCHROME1":
            arr = 255 - arr
    elif arr.ndim == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = _to_uint8(arr, bits if arr.dtype != np.uint8 else None)
    else:
        raise ScanError("unsupported", name, f"photometric interpretation {photometric} is not supported")
    try:
        spacing, source = _region_spacing(ds), "ultrasound region"
        if spacing is None and "PixelSpacing" in ds:
            spacing, source = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])), "PixelSpacing"
    except (TypeError, ValueError, IndexError, AttributeError) as exc:  # a malformed calibration, not a bad image
        spacing, source = (math.nan, math.nan), f"the calibration ({type(exc).__name__}: {exc})"
    mode = f"{photometric} {bits}-bit"
    try:
        region = _dicom_region(ds, arr.shape[:2])
    except (TypeError, ValueError, AttributeError, OverflowError):  # malformed bounds: the pixels are searched instead
        region = None
    return arr, mode, spacing, source if spacing else None, frame, region


def _checked_spacing(spacing: tuple[float, float] | None, source: str | None
                     ) -> tuple[tuple[float, float] | None, str | None, str | None]:
    """(spacing, source, refusal): a calibration is used only if both values are finite and plausible."""
    if spacing is None:
        return None, None, None
    lo, hi = SPACING_MM
    if all(math.isfinite(v) and lo <= v <= hi for v in spacing):
        return spacing, source, None
    return None, None, (f"{source} gives {spacing[0]:g} x {spacing[1]:g} mm per pixel, not a valid calibration "
                        f"({lo:g}-{hi:g} mm); measured in pixels")


def read_scan(source: str | Path | bytes, name: str | None = None, frame: int | None = None) -> Scan:
    """Read one scan from a path or bytes. Raises ``ScanError`` (never anything else) for bad input."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ScanError("too_large", name, f"{size:,} bytes is over the {MAX_FILE_BYTES // 2**20} MB ({MAX_FILE_BYTES:,}-byte) limit")
            data = path.read_bytes()
        except OSError as exc:
            raise ScanError("not_image", name, f"cannot be read ({exc.strerror or exc})") from exc
    else:
        data, name = bytes(source), name or "upload"
        if len(data) > MAX_FILE_BYTES:
            raise ScanError("too_large", name, f"{len(data):,} bytes is over the {MAX_FILE_BYTES // 2**20} MB ({MAX_FILE_BYTES:,}-byte) limit")
    name = Path(name).name or "upload"
    if not data:
        raise ScanError("empty", name, "the file is empty (0 bytes); upload the scan again")
    digest = hashlib.sha256(data).hexdigest()
    try:
        if _is_dicom(data):
            arr, mode, spacing, spacing_source, frame, region = _read_dicom(data, name, frame)
            fmt = "DICOM"
        else:
            if frame not in (None, 0):
                raise ScanError("bad_frame", name, f"frame {frame} asked for, but this is a single image")
            arr, fmt, mode = _read_raster(data, name)
            spacing = spacing_source = region = None
            frame = None
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom and Pillow raise many kinds on inconsistent headers
        raise ScanError("bad_header", name, f"the file's header is inconsistent ({type(exc).__name__}: {exc}); "
                                            "export the image again") from exc
    if arr.size == 0 or arr.ndim < 2 or min(arr.shape[:2]) < 8:
        raise ScanError("no_pixels", name, f"{arr.shape[1] if arr.ndim > 1 else 0}x{arr.shape[0]} pixels is too small "
                                           "to be a scan")
    h, w = arr.shape[:2]
    _refuse_odd_shape(name, w, h)  # also for headers that did not state the size
    spacing, spacing_source, refused = _checked_spacing(spacing, spacing_source)
    gray, display = _views(np.ascontiguousarray(arr))
    return Scan(name=name, gray=gray, display=display, sha256=digest, format=fmt, mode=mode,
                spacing_mm=spacing, spacing_source=spacing_source, frame=frame, spacing_refused=refused,
                region=region or find_region(gray))
