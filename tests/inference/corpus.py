"""A malformed-input corpus, generated: several hundred files a hostile-but-fair user could upload.

Every format truncated at several points, random bytes, empty files under every extension, headers
that promise decompression bombs and extreme aspect ratios, odd modes and bit depths, DICOM header and
transfer-syntax variants, and hostile file names; plus valid files in each format and mode, which
must still be read. ``make_corpus(folder)`` writes it and returns {file name: valid?}.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, (64, 80), dtype=np.uint8)
RASTER = ("png", "jpeg", "bmp", "tiff", "webp")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def valid_rasters() -> dict[str, bytes]:
    rgb = np.dstack([GRAY, np.roll(GRAY, 3, 0), GRAY // 2])
    out = {f"valid_L.{f}": encode(Image.fromarray(GRAY), f.upper()) for f in RASTER}
    out.update({f"valid_RGB.{f}": encode(Image.fromarray(rgb), f.upper()) for f in RASTER})
    out["valid_RGBA.png"] = encode(Image.fromarray(np.dstack([rgb, GRAY])), "PNG")
    out["valid_LA.png"] = encode(Image.fromarray(np.dstack([GRAY, GRAY])), "PNG")
    out["valid_P.png"] = encode(Image.fromarray(rgb).convert("P"), "PNG")
    out["valid_1.png"] = encode(Image.fromarray(GRAY > 127), "PNG")
    out["valid_I16.png"] = encode(Image.fromarray(GRAY.astype(np.uint16) * 257), "PNG")
    out["valid_I16.tiff"] = encode(Image.fromarray(GRAY.astype(np.uint16) * 3), "TIFF")
    out["valid_F.tiff"] = encode(Image.fromarray(GRAY.astype(np.float32) / 7), "TIFF")
    out["valid_I32.tiff"] = encode(Image.fromarray(GRAY.astype(np.int32) - 100), "TIFF")
    out["valid_CMYK.jpeg"] = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG")
    out["valid_YCbCr.jpeg"] = encode(Image.fromarray(rgb).convert("YCbCr"), "JPEG")
    out["valid_progressive.jpeg"] = encode(Image.fromarray(GRAY), "JPEG", progressive=True)
    out["valid_constant.png"] = encode(Image.fromarray(np.zeros_like(GRAY)), "PNG")
    out["valid_8x8.png"] = encode(Image.fromarray(GRAY[:8, :8]), "PNG")
    return out


def png_header(width: int, height: int, mode_bits: tuple[int, int] = (8, 0), idat: bytes | None = None) -> bytes:
    """A PNG whose header claims ``width x height`` (bit depth, colour type) with a tiny all-zero stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, mode_bits[0], mode_bits[1], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", idat if idat is not None else zlib.compress(b"\x00" * 4096, 9)) + chunk(b"IEND", b""))


def shapes_and_bombs() -> dict[str, bytes]:
    out = {
        "bomb_60000x60000.png": png_header(60000, 60000),
        "bomb_100000x1.png": png_header(100000, 1),
        "strip_8x5000000.png": png_header(8, 5_000_000),
        "strip_5000000x8.png": png_header(5_000_000, 8),
        "zero_width.png": png_header(0, 100),
        "zero_both.png": png_header(0, 0),
        "huge_16bit.png": png_header(30000, 30000, (16, 0)),
        "odd_bitdepth.png": png_header(64, 64, (3, 0)),
        "bad_colour_type.png": png_header(64, 64, (8, 5)),
        "wide_9to1.png": encode(Image.new("L", (900, 100)), "PNG"),
        "tall_1to9.png": encode(Image.new("L", (100, 900)), "PNG"),
        "tiny_4x4.png": encode(Image.new("L", (4, 4)), "PNG"),
        "one_pixel.bmp": encode(Image.new("L", (1, 1)), "BMP"),
        "gif_not_supported.gif": encode(Image.fromarray(GRAY), "GIF"),
        "ico_not_supported.ico": encode(Image.fromarray(GRAY), "ICO"),
        "pdf_not_supported.pdf": encode(Image.fromarray(GRAY).convert("RGB"), "PDF"),
    }
    pages = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    out["multipage.tiff"] = buf.getvalue()
    buf = io.BytesIO()
    pages[0].save(buf, format="PNG", save_all=True, append_images=pages[1:])
    out["animated.png"] = buf.getvalue()
    buf = io.BytesIO()
    pages[0].save(buf, format="WEBP", save_all=True, append_images=pages[1:], lossless=True)
    out["animated.webp"] = buf.getvalue()
    bomb = io.BytesIO()  # a real zlib bomb: 12,000 x 12,000 zero pixels in a few hundred KB
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")
    out["zlib_bomb_12000.png"] = bomb.getvalue()
    return out


def dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", frames: int = 1, syntax=None, **extra) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID, "US"
    shape = pixels.shape[1:] if frames > 1 else pixels.shape
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == (4 if frames > 1 else 3) else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    for key, value in extra.items():
        if value is None:
            delattr(ds, key) if key in ds else None
        else:
            setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_variants() -> dict[str, bytes]:
    import pydicom.uid as uid
    from pydicom.encaps import encapsulate

    g16 = GRAY.astype(np.uint16) * 16
    rgb = np.dstack([GRAY, GRAY, GRAY])
    out = {
        "valid_mono2.dcm": dicom(GRAY),
        "valid_mono1.dcm": dicom(GRAY, "MONOCHROME1"),
        "valid_12bit.dcm": dicom(g16, BitsStored=12, HighBit=11),
        "valid_signed.dcm": dicom(GRAY.astype(np.int16) - 128, RescaleSlope=2, RescaleIntercept=-5),
        "valid_rgb.dcm": dicom(rgb, "RGB"),
        "valid_window.dcm": dicom(g16, WindowCenter=2000, WindowWidth=4000),
        "valid_spacing.dcm": dicom(GRAY, PixelSpacing=[0.1, 0.1]),
        "valid_implicit.dcm": dicom(GRAY, syntax=uid.ImplicitVRLittleEndian),
    }
    headers = {
        "rows_zero": {"Rows": 0}, "columns_zero": {"Columns": 0}, "rows_missing": {"Rows": None},
        "rows_huge": {"Rows": 60000, "Columns": 60000}, "rows_strip": {"Rows": 8, "Columns": 640},
        "bits_allocated_12": {"BitsAllocated": 12}, "bits_allocated_0": {"BitsAllocated": 0},
        "bits_stored_over": {"BitsStored": 20}, "highbit_odd": {"HighBit": 30},
        "samples_3_mono": {"SamplesPerPixel": 3}, "samples_0": {"SamplesPerPixel": 0},
        "photometric_palette": {"PhotometricInterpretation": "PALETTE COLOR"},
        "photometric_hsv": {"PhotometricInterpretation": "HSV"},
        "photometric_ybr_1sample": {"PhotometricInterpretation": "YBR_FULL"},
        "photometric_missing": {"PhotometricInterpretation": None},
        "frames_zero": {"NumberOfFrames": 0}, "frames_negative": {"NumberOfFrames": -3},
        "frames_more_than_data": {"NumberOfFrames": 50}, "frames_huge": {"NumberOfFrames": 10**9},
        "window_width_zero": {"WindowCenter": 128, "WindowWidth": 0},
        "window_width_negative": {"WindowCenter": 128, "WindowWidth": -10},
        "window_multi": {"WindowCenter": [100, 128], "WindowWidth": [50, 255]},
        "spacing_one_value": {"PixelSpacing": [0.1]}, "spacing_nan": {"PixelSpacing": ["NaN", "NaN"]},
        "spacing_inf": {"PixelSpacing": ["inf", "inf"]}, "spacing_zero": {"PixelSpacing": [0, 0]},
        "spacing_negative": {"PixelSpacing": [-0.1, -0.1]}, "spacing_huge": {"PixelSpacing": [1e300, 1e300]},
        "rescale_slope_zero": {"RescaleSlope": 0, "RescaleIntercept": 0},
        "rescale_slope_nan": {"RescaleSlope": "NaN", "RescaleIntercept": 0},
        "pixel_representation_2": {"PixelRepresentation": 2},
        "pixeldata_short": {"PixelData": GRAY.tobytes()[:1000]},
        "pixeldata_long": {"PixelData": GRAY.tobytes() * 3},
        "pixeldata_empty": {"PixelData": b""},
        "pixeldata_missing": {"PixelData": None},
    }
    for name, extra in headers.items():
        out[f"hdr_{name}.dcm"] = dicom(GRAY, **extra)
    syntaxes = {"jpeg_baseline": uid.JPEGBaseline8Bit, "jpeg_ls": uid.JPEGLSLossless, "rle": uid.RLELossless,
                "j2k": uid.JPEG2000Lossless, "jpeg_lossless": uid.JPEGLosslessSV1, "htj2k": uid.HTJ2KLossless}
    junk = {"zeros": b"\x00" * 64, "random": RNG.integers(0, 256, 200, dtype=np.uint8).tobytes(),
            "jpeg_soi": b"\xff\xd8\xff\xe0" + b"\x13" * 64, "empty": b""}
    for sname, syntax in syntaxes.items():
        for jname, payload in junk.items():
            out[f"ts_{sname}_{jname}.dcm"] = dicom(GRAY, syntax=syntax, PixelData=encapsulate([payload]) if payload
                                                  else encapsulate([b"\x00\x00"]))
    out["ts_big_endian.dcm"] = dicom(GRAY, syntax=uid.ExplicitVRBigEndian)
    out["ts_deflated.dcm"] = dicom(GRAY, syntax=uid.DeflatedExplicitVRLittleEndian)
    out["ts_unknown_uid.dcm"] = dicom(GRAY).replace(b"1.2.840.10008.1.2.1", b"1.2.3.4.5.6.7.8.9.0", 1)
    cine = np.stack([GRAY, 255 - GRAY, GRAY // 2])
    out["cine_3.dcm"] = dicom(cine, frames=3)
    good = dicom(GRAY)
    out["no_preamble.dcm"] = good[128:]
    out["preamble_only.dcm"] = good[:132]
    out["dicm_then_garbage.dcm"] = good[:132] + RNG.integers(0, 256, 500, dtype=np.uint8).tobytes()
    return out


def broken_versions(valid: dict[str, bytes]) -> dict[str, bytes]:
    """Each valid file truncated at several points, and with bytes flipped in its middle."""
    out = {}
    for name, data in valid.items():
        stem, ext = name.rsplit(".", 1)
        for frac in (0.05, 0.3, 0.6, 0.95):
            out[f"cut{int(frac * 100):02d}_{stem}.{ext}"] = data[: max(1, int(len(data) * frac))]
        out[f"cutlast_{stem}.{ext}"] = data[:-1]
        flipped = bytearray(data)
        mid = len(flipped) // 2
        flipped[mid:mid + 16] = bytes(255 - b for b in flipped[mid:mid + 16])
        out[f"flip_{stem}.{ext}"] = bytes(flipped)
    return out


def noise_and_empties() -> dict[str, bytes]:
    out = {f"empty.{ext}": b"" for ext in ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "dcm", "dicom")}
    out["empty_no_extension"] = b""
    for k, size in enumerate((1, 7, 64, 512, 4096, 65536)):
        out[f"random_{size}.png"] = RNG.integers(0, 256, size, dtype=np.uint8).tobytes()
        out[f"random_{size}.dcm"] = RNG.integers(0, 256, size, dtype=np.uint8).tobytes()
    out["text.png"] = b"hello, this is not a scan\n" * 10
    out["html.jpg"] = b"<html><body>not an image</body></html>"
    out["zip_as.png"] = b"PK\x03\x04" + b"\x00" * 100
    out["jpeg_magic_only.jpg"] = b"\xff\xd8\xff"
    out["png_magic_only.png"] = b"\x89PNG\r\n\x1a\n"
    out["png_as.jpg"] = encode(Image.fromarray(GRAY), "PNG")  # wrong extension, valid content
    return out


def hostile_names() -> dict[str, bytes]:
    data = encode(Image.fromarray(GRAY), "PNG")
    names = ["-rf.png", "--out=x.png", ".hidden.png", "a b  c.png", "new\nline.png", "tab\tname.png",
             "quote'\"`.png", "semi;colon&amp|pipe.png", "ünïcødé scan.png", "中文扫描.png", "emoji_🩻.png",
             "x" * 240 + ".png", "..png", "...png", "$(reboot).png", "%00null.png", "back\\slash.png",
             "CON.png", "upper.PNG", "trailing.png "]
    return {f"name_{k:02d}_{n}": data for k, n in enumerate(names)}


def make_corpus(folder: Path) -> dict[str, bool]:
    """Write the corpus into ``folder``; returns {file name: whether it is a readable scan}."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = {**valid_rasters(), **{k: v for k, v in dicom_variants().items() if k.startswith("valid_")}}
    files = {**valid, **shapes_and_bombs(), **dicom_variants(), **broken_versions(valid), **noise_and_empties(),
             **hostile_names()}
    expected = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        expected[name] = name in valid or name.startswith("name_") or name in ("png_as.jpg",)
    return expected
