"""One training run on a lent GPU (reports/gpu/README.md) from the cache that build_cache.py wrote: the library's
train_model with the same RunConfig the CLI builds, the cached arrays standing in for decode_cases. Writes a slim best.pt
(fp16 model, epoch, score, config: what `sonomark ship` reads), log.csv, config.json, curves.png."""
import argparse, json, time
from dataclasses import asdict
from pathlib import Path
import cv2, numpy as np, torch
from models.preprocess import CaseArrays
from models.training import train as T
from models.zoo import get_spec

ap = argparse.ArgumentParser()
ap.add_argument("--cache", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--sources", nargs="+", default=["busi", "busbra"])
ap.add_argument("--runs", type=Path, required=True)
ap.add_argument("--epochs", type=int); ap.add_argument("--lr", type=float); ap.add_argument("--batch-size", type=int)
ap.add_argument("--patience", type=int); ap.add_argument("--augment", default="standard")
ap.add_argument("--balance-sources", action="store_true"); ap.add_argument("--freeze", type=int, default=0,
                help="unet_vgg19: keep encoder.features[:N] at their ImageNet weights")
ap.add_argument("--minutes", type=float, default=7.0)
ap.add_argument("--device", default="cuda"); ap.add_argument("--limit", type=int)
args = ap.parse_args()
torch.set_num_threads(1)
z = np.load(args.cache)


def arrays(name):
    meta = json.loads(str(z[f"{name}_meta"]))
    blob, off = z[f"{name}_jpeg"], z[f"{name}_offsets"]
    keep = [k for k, s in enumerate(meta["sources"]) if s in args.sources][:args.limit]
    images = np.stack([cv2.imdecode(blob[off[k]:off[k + 1]], cv2.IMREAD_GRAYSCALE) for k in keep])
    size = images.shape[-1]
    masks = np.unpackbits(z[f"{name}_masks"][keep], axis=1)[:, :size * size].reshape(-1, size, size).astype(bool)
    pick = lambda key: tuple(meta[key][k] for k in keep)
    return CaseArrays(pick("case_ids"), pick("sources"), pick("groups"), z[f"{name}_labels"][keep], images, masks)


if args.freeze:
    build = T.build_model

    def frozen(name, init):
        net = build(name, init)
        for p in net.encoder.features[:args.freeze].parameters():
            p.requires_grad_(False)
        return net
    T.build_model = frozen
spec = get_spec(args.model)
cached_fit = str(z["fit"]) if "fit" in z.files else "squash"  # caches built before the fit existed squashed
if cached_fit != spec.fit:
    raise SystemExit(f"{args.cache}: scans fitted by {cached_fit!r}, but {args.model} reads them by {spec.fit!r}; "
                     f"build a cache with build_cache.py SIZE QUALITY OUT {spec.fit}")
train, val = arrays("train"), arrays("val")
config = T.RunConfig.for_model(spec, args.device, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               patience=args.patience, seed=0, augment=args.augment,
                               balance_sources=args.balance_sources or None, init="default",
                               data=tuple(sorted(set(args.sources))),
                               split_fingerprints=json.loads(str(z["fingerprints"])))
run_dir = args.runs / args.model
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "config.json").write_text(json.dumps({**asdict(config), "gpu_freeze": args.freeze}, indent=1) + "\n")
print(f"{args.runs}: {len(train)} train / {len(val)} val, {config}", flush=True)
t0 = time.time()
T.train_model(spec, train, val, config, run_dir, progress=False, deadline=t0 + 60 * args.minutes)
ck = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
ck["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
torch.save(ck, run_dir / "best.pt")
(run_dir / "last.pt").unlink()
print(f"{args.runs}: best {ck['score']:.4f} at epoch {ck['epoch']} in {time.time() - t0:.0f} s", flush=True)
