"""Choose the VGG19 U-Net recipe (vA or vC) by its both-source validation score; put the logs of every run,
that recipe's both-source model and the SegFormers in $OUT (tar split in 15 MiB parts), and the rest in
/root/keep/B.tar (its one-source models) and /root/keep/C.tar (everything else) for the next calls."""
import subprocess, sys, tarfile, torch
from pathlib import Path

R, OUT = Path(sys.argv[1]), Path(sys.argv[2])
score = {}
for d in sorted(R.iterdir()):
    best = next(d.glob("*/best.pt"), None) if d.is_dir() else None
    if best:
        score[d.name] = torch.load(best, map_location="cpu", weights_only=False)["score"]
print({k: round(v, 4) for k, v in score.items()})
win = max(("vA", "vC"), key=lambda t: score.get(t, -1))
lose = "vC" if win == "vA" else "vA"
print("VGG19 U-Net recipe chosen for its one-source versions:", win)
(R / "CHOSEN").write_text(win + "\n")


def pack(tar_path, members):
    with tarfile.open(tar_path, "w") as tar:
        for m in members:
            tar.add(m, arcname=str(m.relative_to(R.parent)))


logs = [p for p in R.rglob("*") if p.is_file() and p.name != "best.pt"]
a = logs + [p for t in (win, "sS", "sS-busi", "sS-busbra") for p in (R / t).glob("*/best.pt")]
pack("/root/keep/A.tar", a)
pack("/root/keep/B.tar", [p for t in (f"{win}-busi", f"{win}-busbra") for p in (R / t).glob("*/best.pt")])
pack("/root/keep/C.tar", [p for t in (lose, f"{lose}-busi", f"{lose}-busbra", "vB", "vE", "rR") for p in (R / t).glob("*/best.pt")])
subprocess.run(f"split -b 15M -d /root/keep/A.tar {OUT}/A.tar.part", shell=True, check=True)
