"""Reading scans in every supported format, and every kind of bad input."""
import io

import numpy as np
import pytest
from PIL import Image

from models.inference.scan import MAX_PIXELS, ScanError, read_scan

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (40, 60), dtype=np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_round_trip(fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    scan = read_scan(encode(Image.fromarray(GRAY), fmt, **kw), name=f"scan.{fmt.lower()}")
    assert scan.format == fmt and scan.gray.dtype == np.uint8
    assert np.array_equal(scan.gray, GRAY)
    assert scan.display.shape == (40, 60, 3) and scan.spacing_mm is None


def test_jpeg_and_modes():
    assert read_scan(encode(Image.fromarray(GRAY), "JPEG", quality=95)).gray.shape == (40, 60)
    rgb = np.stack([GRAY, GRAY, GRAY], axis=2)
    assert np.array_equal(read_scan(encode(Image.fromarray(rgb), "PNG")).gray, GRAY)
    rgba = np.dstack([rgb, np.full_like(GRAY, 128)])
    assert np.array_equal(read_scan(encode(Image.fromarray(rgba), "PNG")).gray, GRAY)
    pal = Image.fromarray(GRAY).convert("P")
    assert read_scan(encode(pal, "PNG")).gray.shape == (40, 60)
    colour = rgb.copy()
    colour[5:10, 5:10] = (255, 0, 0)  # a coloured caliper mark stays in the display view
    scan = read_scan(encode(Image.fromarray(colour), "PNG"))
    assert tuple(scan.display[7, 7]) == (255, 0, 0) and scan.gray[7, 7] != 255


def test_16_bit_png_is_scaled_to_8_bit():
    deep = (GRAY.astype(np.uint16) * 257)
    scan = read_scan(encode(Image.fromarray(deep), "PNG"))
    assert scan.mode.startswith("I") and scan.gray.dtype == np.uint8
    assert np.abs(scan.gray.astype(int) - GRAY).max() <= 1


def test_exif_orientation_is_honoured():
    im = Image.fromarray(GRAY)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    scan = read_scan(encode(im, "JPEG", exif=exif))
    assert scan.gray.shape == (60, 40)


def dicom(pixels, photometric="MONOCHROME2", frames=1, region=True, **extra) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[-3 if photometric == "RGB" else -2], pixels.shape[-2 if photometric == "RGB" else -1]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, extra.pop("bits_stored", bits), bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if region:
        r = Dataset()
        r.RegionSpatialFormat, r.RegionDataType = 1, 1
        r.RegionLocationMinX0, r.RegionLocationMinY0 = 0, 0
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX, r.PhysicalDeltaY = 0.008, 0.01  # cm per pixel
        ds.SequenceOfUltrasoundRegions = [r]
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_8_bit_with_ultrasound_region_spacing():
    scan = read_scan(dicom(GRAY), name="a.dcm")
    assert scan.format == "DICOM" and np.array_equal(scan.gray, GRAY)
    assert scan.spacing_mm == pytest.approx((0.1, 0.08)) and scan.spacing_source == "ultrasound region"


def test_dicom_16_bit_pixel_spacing_and_monochrome1():
    deep = (GRAY.astype(np.uint16) * 16)  # 12 bits stored
    scan = read_scan(dicom(deep, region=False, bits_stored=12, PixelSpacing=[0.2, 0.25]))
    assert np.abs(scan.gray.astype(int) - (GRAY.astype(int) * 16 * 255 // 4095)).max() <= 1
    assert scan.spacing_mm == (0.2, 0.25) and scan.spacing_source == "PixelSpacing"
    inverted = read_scan(dicom(GRAY, photometric="MONOCHROME1"))
    assert np.array_equal(inverted.gray, 255 - GRAY)


def test_dicom_rgb():
    rgb = np.stack([GRAY, GRAY, GRAY], axis=2)
    assert np.array_equal(read_scan(dicom(rgb, photometric="RGB")).gray, GRAY)


def test_multiframe_dicom_needs_a_frame():
    cine = np.stack([GRAY, 255 - GRAY, GRAY // 2])
    data = dicom(cine, frames=3)
    with pytest.raises(ScanError, match="3 frames; choose the frame") as err:
        read_scan(data, name="cine.dcm")
    assert err.value.kind == "multiframe"
    assert np.array_equal(read_scan(data, frame=1).gray, 255 - GRAY)
    with pytest.raises(ScanError, match="frame 7 does not exist"):
        read_scan(data, frame=7)


def test_compressed_dicom_without_decoder():
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless
    ds = pydicom.dcmread(io.BytesIO(dicom(GRAY)))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 64])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ScanError) as err:
        read_scan(buf.getvalue(), name="ls.dcm")
    assert err.value.kind == "compressed_dicom" and "export it uncompressed" in str(err.value)


def test_dicom_without_pixels():
    data = dicom(GRAY)
    import pydicom
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ScanError, match="no PixelData"):
        read_scan(buf.getvalue())


@pytest.mark.parametrize("data, kind", [
    (b"", "empty"),
    (b"just some text, not a picture", "not_image"),
    (encode(Image.fromarray(GRAY), "PNG")[:200], "truncated"),
    (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10", "no_pixels"),
    (dicom(GRAY)[:-500], "truncated"),
    (encode(Image.fromarray(GRAY), "GIF"), "unsupported"),
    (encode(Image.fromarray(GRAY[:4, :4]), "PNG"), "no_pixels"),
])
def test_bad_input_is_a_scan_error(data, kind):
    with pytest.raises(ScanError) as err:
        read_scan(data, name="bad.png")
    assert err.value.kind == kind and str(err.value).startswith("bad.png: ")


def test_oversized_image_is_refused_before_decoding():
    side = int(MAX_PIXELS ** 0.5) + 10
    data = encode(Image.new("L", (side, side)), "PNG")
    with pytest.raises(ScanError, match="pixel limit") as err:
        read_scan(data, name="huge.png")
    assert err.value.kind == "too_large"


def test_paths_missing_files_and_names(tmp_path):
    path = tmp_path / "scan one.png"
    path.write_bytes(encode(Image.fromarray(GRAY), "PNG"))
    scan = read_scan(path)
    assert scan.name == "scan one.png" and len(scan.sha256) == 64
    assert read_scan(path.read_bytes(), name="../../etc/evil.png").name == "evil.png"
    with pytest.raises(ScanError, match="cannot be read"):
        read_scan(tmp_path / "absent.png")
    assert read_scan(path).gray.tobytes() == read_scan(path).gray.tobytes()


def _frames_not_a_number() -> bytes:
    data = dicom(GRAY, NumberOfFrames=1)
    at = data.index(b"\x28\x00\x08\x00IS\x02\x00")  # (0028,0008) IS, 2 bytes: "1 " becomes "ab"
    return data[:at + 8] + b"ab" + data[at + 10:]


@pytest.mark.parametrize("make", [
    lambda: dicom(GRAY, WindowCenter=128, WindowWidth=0),  # ValueError inside the VOI LUT
    _frames_not_a_number,  # ValueError reading the frame count
    lambda: dicom(GRAY, SamplesPerPixel=3),  # MONOCHROME2, 3 samples, no PlanarConfiguration: AttributeError
], ids=["window-width-0", "frames-not-a-number", "3-samples-monochrome"])
def test_inconsistent_dicom_headers_are_a_typed_error_of_that_file(make):
    with pytest.raises(ScanError, match="odd.dcm: the file's header is inconsistent") as err:
        read_scan(make(), name="odd.dcm")
    assert err.value.kind == "bad_header"


def test_a_malformed_calibration_leaves_the_scan_readable_in_pixels():
    scan = read_scan(dicom(GRAY, region=False, PixelSpacing=[0.2]), name="one-value.dcm")  # TypeError on [1]
    assert np.array_equal(scan.gray, GRAY) and scan.spacing_mm is None
    assert "not a valid calibration" in scan.spacing_refused


@pytest.mark.parametrize("spacing", [[float("nan"), 0.1], [float("inf"), 0.1], [0.0, 0.0], [-0.1, -0.1], [1e300, 1e300]])
def test_an_invalid_calibration_is_refused_and_measures_stay_in_pixels(spacing):
    scan = read_scan(dicom(GRAY, region=False, PixelSpacing=spacing), name="cal.dcm")
    assert scan.spacing_mm is None and scan.spacing_source is None
    assert "not a valid calibration" in scan.spacing_refused and "measured in pixels" in scan.spacing_refused


def test_an_invalid_ultrasound_region_is_refused_too():
    from pydicom import dcmread
    ds = dcmread(io.BytesIO(dicom(GRAY)))
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = 1e300
    buf = io.BytesIO()
    ds.save_as(buf)
    scan = read_scan(buf.getvalue(), name="region.dcm")
    assert scan.spacing_mm is None and "ultrasound region" in scan.spacing_refused


def test_a_scan_of_no_scan_shape_is_refused_before_it_is_decoded():
    # 8 x 5,000,000 all-zero pixels: a 39 KB PNG within the pixel limit that once stalled the server
    data = encode(Image.new("L", (5_000_000, 8)), "PNG", optimize=False)
    assert len(data) < 1_000_000
    with pytest.raises(ScanError, match="not the shape of a scan") as err:
        read_scan(data, name="strip.png")
    assert err.value.kind == "bad_shape"
    with pytest.raises(ScanError, match="not the shape of a scan"):
        read_scan(dicom(np.zeros((8, 200), np.uint8)), name="strip.dcm")
    assert read_scan(encode(Image.new("L", (400, 100)), "PNG")).shape == (100, 400)  # a 4:1 panorama is fine


def test_a_file_over_the_size_limit_says_by_how_much():
    from models.inference.scan import MAX_FILE_BYTES
    with pytest.raises(ScanError, match=f"{MAX_FILE_BYTES + 1:,} bytes is over the 64 MB"):
        read_scan(b"\0" * (MAX_FILE_BYTES + 1), name="big.png")


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "WEBP"])
def test_a_file_of_several_images_is_refused_rather_than_read_at_its_first(fmt):
    frames = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY)]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)
    with pytest.raises(ScanError, match=f"2 images in one {fmt} file") as err:
        read_scan(data, name=f"two.{fmt.lower()}")
    assert err.value.kind == "multiframe"


def test_signed_and_rescaled_dicom_values_keep_their_order():
    signed = GRAY.astype(np.int16) * 8 - 1000  # -1000 .. 1040: a third of the pixels below zero
    scan = read_scan(dicom(signed, PixelRepresentation=1), name="signed.dcm")
    order = np.argsort(signed, axis=None, kind="stable")
    assert (np.diff(scan.gray.ravel()[order].astype(int)) >= 0).all()  # monotonic: nothing below zero is clipped
    assert scan.gray.min() == 0 and scan.gray.max() == 255
    assert len(np.unique(scan.gray[signed < 0])) > 50  # the negative values still differ from each other
    inverted = read_scan(dicom(GRAY.astype(np.uint16), RescaleSlope=-1, RescaleIntercept=255), name="slope.dcm")
    assert np.abs(inverted.gray.astype(int) - (255 - GRAY)).max() <= 1  # the slope is applied, not ignored


@pytest.mark.parametrize("syntax, junk", [
    ("JPEGBaseline8Bit", b"\xff\xd8\xff\xe0" + b"\x13" * 64),
    ("RLELossless", b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\xff" * 10),
    ("JPEG2000Lossless", b"\xff\x4f\xff\x51" + b"\x00" * 60),
])
def test_corrupt_compressed_dicom_is_called_corrupt_when_its_decoder_is_installed(syntax, junk):
    import pydicom
    import pydicom.uid
    from pydicom.encaps import encapsulate
    ds = pydicom.dcmread(io.BytesIO(dicom(GRAY)))
    ds.file_meta.TransferSyntaxUID = getattr(pydicom.uid, syntax)
    ds.PixelData = encapsulate([junk])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ScanError) as err:
        read_scan(buf.getvalue(), name="broken.dcm")
    assert err.value.kind == "truncated" and "is corrupt" in str(err.value) and "no decoder" not in str(err.value)


def test_frame_count_reads_the_header_only(tmp_path):
    from models.inference.scan import frame_count
    cine = dicom(np.stack([GRAY, 255 - GRAY, GRAY // 2]), frames=3)
    (tmp_path / "cine.dcm").write_bytes(cine)
    assert frame_count(tmp_path / "cine.dcm") == 3 and frame_count(cine) == 3
    assert frame_count(dicom(GRAY)) == 1 and frame_count(encode(Image.fromarray(GRAY), "PNG")) == 1
    assert frame_count(b"") == 1 and frame_count(tmp_path / "absent.dcm") == 1 and frame_count(_frames_not_a_number()) == 1
