"""Benchmark: does closer mean better? The downstream stage on a mid-size synthetic set.

Copies the pipeline into a throwaway git + DVC repo, with about 100 train, 50 normal and 50
anomalous test clips per machine ID, and ``downstream.enabled=true``; runs `dvc repro` at
realistic strength (1) and at strength 2. Prints, per machine type and mask setting, the
proxy detectors' AUC and pAUC with their intervals, the difference from training_today, and
per type the rank correlation of closeness and AUC with its sentence; then the downstream
stage's wall time (whole process, as `dvc repro` runs it) against the cold run's other stages.

Usage: python benchmarks/bench_downstream.py [--strengths 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import grouped, make_project, run_repro, set_params  # noqa: E402

MID_SIZE = {
    "train_clips_per_id": 100,
    "test_normal_clips_per_id": 50,
    "test_anomaly_clips_per_id": 50,
}


def table(record: dict) -> list[str]:
    """The benchmark's lines for one run's ``build/downstream.json``."""
    lines = [
        f"  {'type':<12}{'setting':<16}{'mask score':>11}  {'AUC [90% CI]':<22}"
        f"{'pAUC [90% CI]':<22}{'AUC - training_today':<28}"
    ]
    for machine_type, summary in record["types"].items():
        for name, v in summary["settings"].items():
            score = "–" if v["mask_score"] is None else f"{v['mask_score']:.3g}"
            diff = "–"
            if "auc_minus_baseline" in v:
                low, high = v["auc_minus_baseline_ci"]
                diff = f"{v['auc_minus_baseline']:+.3f} [{low:+.3f}, {high:+.3f}]"
            lines.append(
                f"  {machine_type:<12}{name:<16}{score:>11}  "
                f"{v['auc']:.3f} [{v['auc_ci'][0]:.3f}, {v['auc_ci'][1]:.3f}]  "
                f"{v['pauc']:.3f} [{v['pauc_ci'][0]:.3f}, {v['pauc_ci'][1]:.3f}]  {diff}"
            )
        rho = summary.get("rank_correlation")
        rho_text = ""
        if rho and rho["rho"] is not None and rho["ci"][0] is not None:
            rho_text = f"rho {rho['rho']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}]: "
        lines.append(f"  {machine_type:<12}-> {rho_text}{summary['sentence']}")
        for name, ref in summary.get("references", {}).items():
            lines.append(
                f"  {machine_type:<12}reference {name}: AUC {ref['auc']:.3f} "
                f"[{ref['auc_ci'][0]:.3f}, {ref['auc_ci'][1]:.3f}]"
            )
        if "calibration" in summary:
            lines.append(f"  {machine_type:<12}calibration: {summary['calibration']['sentence']}")
        lines.append(f"  {machine_type:<12}train clips: {summary.get('train_clips_per_id')}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0])
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n_clips = make_project(work, MID_SIZE, env)
        # The set's own 100 train clips per ID (not the check's synthetic extra clips).
        set_params(work, {"downstream.enabled": True, "downstream.synthetic_train_clips_per_id": 0})
        for strength in args.strengths:
            set_params(work, {"synthetic.strength": strength})
            total, stages = run_repro(work, env)
            groups = grouped(stages)
            record = json.loads((work / "build/downstream.json").read_text())
            seconds = groups.get("downstream", [0.0])[0]
            print(
                f"strength {strength:g} ({n_clips} clips, {record['n_parameters']} parameters per "
                f"detector, {record['perturbation']}): dvc repro {total:.0f} s, of which the "
                f"downstream stage {seconds:.0f} s ({seconds / total:.0%}) on {os.cpu_count()} cores"
            )
            print("\n".join(table(record)), flush=True)


if __name__ == "__main__":
    main()
