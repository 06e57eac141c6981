"""Pack the committed split's train and val cases, decoded at 160 px exactly as training decodes them
(models.preprocess.decode_cases), as JPEG q95 scans + packed masks, for a lent GPU that cannot see ../shared.
Usage: build_cache.py SIZE QUALITY OUT [FIT]; FIT (squash, the default, or pad) must be the registry's fit of the
models trained from it (train_cached.py checks)."""
import json, sys
import cv2, numpy as np
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.preprocess import decode_cases

size, quality, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fit = sys.argv[4] if len(sys.argv) > 4 else "squash"
split, cases = load_verified([DEFAULT_DATA_DIR], DEFAULT_SPLIT, progress=False)
arrays = {}
for name in ("train", "val"):
    a = decode_cases(split.select(cases, name), size, split.groups, progress=False, fit=fit)
    blobs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for im in a.images]
    arrays[f"{name}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
    arrays[f"{name}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
    arrays[f"{name}_masks"] = np.packbits(a.masks.reshape(len(a), -1), axis=1)
    arrays[f"{name}_labels"] = a.labels
    arrays[f"{name}_meta"] = np.array(json.dumps({"case_ids": a.case_ids, "sources": a.sources, "groups": a.groups}))
    err = np.mean([np.abs(cv2.imdecode(np.frombuffer(b, np.uint8), 0).astype(int) - im).mean() for b, im in zip(blobs, a.images)])
    print(name, len(a), f"mean abs JPEG error {err:.2f} grey levels")
arrays["fingerprints"] = np.array(json.dumps(split.fingerprints))
arrays["fit"] = np.array(fit)
np.savez_compressed(out, **arrays)
