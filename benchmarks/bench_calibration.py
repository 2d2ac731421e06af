"""Benchmark: is the synthetic default as hard as DCASE for the DCASE 2020 baseline autoencoder?

Writes a calibration-size synthetic set with ``synthesize`` (the default params but more clips
per ID), trains the baseline autoencoder (``analysis.baseline_ae``: the published feature,
network and recipe, fewer epochs) once per machine type on its train clips, and prints per type
and ID the AUC and pAUC (max FPR 0.1) beside the published development-set figures, with the
targets' pass/fail (``analysis.calibration``): type AUC within +-6 points, pAUC within +-8,
the IDs' AUC range at least half the published one, no ID at 100 %. The cheap z-score detector
the CI guard uses is printed beside it (its band in tests/test_calibration.py comes from here).

Usage: python benchmarks/bench_calibration.py [--train 200] [--test 50] [--epochs 5]
       [--strength 1.0] [--types fan pump ...] [--detectors ae z] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from analysis.baseline_ae import BaselineConfig, anomaly_scores, dcase_log_mel, train_autoencoder
from analysis.calibration import (
    PUBLISHED_AUC_PCT,
    PUBLISHED_ID_AUC_PCT,
    PUBLISHED_PAUC_PCT,
    check_type,
    id_metrics,
    zscore_scores,
)
from analysis.dcase import parse_clip_name
from analysis.params import validate_params
from analysis.synthesize import synthesize
from analysis.workers import process_pool, resolve_n_jobs

ROOT = Path(__file__).resolve().parents[1]


def _logmel(path: str) -> np.ndarray:
    samples, sr = sf.read(path, dtype="float32")
    return dcase_log_mel(samples, sr)


def load_type(root: Path, machine_type: str, n_jobs: int) -> dict:
    """Log-mels (the baseline's feature), labels and IDs of one type's train and test clips."""
    out = {}
    with process_pool(n_jobs) as pool:
        for split in ("train", "test"):
            paths = sorted((root / machine_type / split).glob("*.wav"))
            parsed = [parse_clip_name(p.name) for p in paths]
            out[split] = {
                "logmel": list(pool.map(_logmel, map(str, paths), chunksize=8)),
                "label": np.array([label for label, _ in parsed]),
                "machine_id": np.array([mid for _, mid in parsed]),
            }
    return out


def detector_scores(data: dict, detector: str, epochs: int) -> np.ndarray:
    """Test-clip scores of one detector: the baseline AE (one model per type) or z-score (per ID)."""
    train, test = data["train"], data["test"]
    if detector == "ae":
        import torch

        torch.set_num_threads(1)
        model = train_autoencoder(train["logmel"], BaselineConfig(epochs=epochs), device="cpu")
        return anomaly_scores(model, test["logmel"])
    scores = np.empty(len(test["logmel"]))
    for mid in np.unique(test["machine_id"]):
        ref = [m for m, i in zip(train["logmel"], train["machine_id"], strict=True) if i == mid]
        pick = np.flatnonzero(test["machine_id"] == mid)
        scores[pick] = zscore_scores(ref, [test["logmel"][k] for k in pick])
    return scores


def type_lines(machine_type: str, detector: str, per_id, check) -> list[str]:
    lines = []
    for m in per_id:
        published = PUBLISHED_ID_AUC_PCT[machine_type][m.machine_id]
        lines.append(
            f"  {machine_type:<12}{detector:<4}{m.machine_id:<7}{m.auc_pct:7.1f}{published:9.1f}"
            f"{m.pauc_pct:8.1f}"
        )
    flags = " ".join(
        f"{name}={'pass' if ok else 'FAIL'}"
        for name, ok in [
            ("auc", check.auc_ok),
            ("pauc", check.pauc_ok),
            ("spread", check.spread_ok),
            ("no100", check.ceiling_ok),
        ]
    )
    lines.append(
        f"  {machine_type:<12}{detector:<4}{'mean':<7}{check.auc_pct:7.1f}"
        f"{PUBLISHED_AUC_PCT[machine_type]:9.1f}{check.pauc_pct:8.1f}"
        f"{PUBLISHED_PAUC_PCT[machine_type]:9.1f}   spread {check.spread_pts:4.1f}  {flags}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=200, help="train clips per ID")
    parser.add_argument(
        "--test", type=int, default=50, help="normal and anomalous test clips per ID"
    )
    parser.add_argument("--epochs", type=int, default=5, help="AE epochs (published: 100)")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--types", nargs="+", default=None)
    parser.add_argument("--detectors", nargs="+", default=["ae", "z"], choices=["ae", "z"])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="write the set here and keep it")
    args = parser.parse_args()

    params = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params = copy.deepcopy(params)
    if args.types:
        params["data"]["machine_types"] = args.types
    params["synthetic"].update(
        train_clips_per_id=args.train,
        test_normal_clips_per_id=args.test,
        test_anomaly_clips_per_id=args.test,
        strength=args.strength,
        n_jobs=args.n_jobs,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = synthesize(params, args.keep or Path(tmp) / "synthetic")
        made = time.perf_counter()
        print(
            f"calibration set: {args.train} train, {args.test} + {args.test} test clips per ID, "
            f"strength {args.strength}; AE epochs {args.epochs}; written in {made - started:.0f} s"
        )
        print(f"  {'type':<12}{'det':<4}{'ID':<7}{'AUC %':>7}{'pub.':>9}{'pAUC %':>8}{'pub.':>9}")
        checks = []
        for machine_type in params["data"]["machine_types"]:
            data = load_type(root, machine_type, resolve_n_jobs(args.n_jobs))
            for detector in args.detectors:
                scores = detector_scores(data, detector, args.epochs)
                per_id = id_metrics(scores, data["test"]["label"], data["test"]["machine_id"])
                check = check_type(machine_type, per_id)
                checks.append((detector, check))
                print("\n".join(type_lines(machine_type, detector, per_id, check)), flush=True)
    ae = [c for d, c in checks if d == "ae"]
    if ae:
        passed = sum(c.ok for c in ae)
        print(f"baseline AE: {passed} of {len(ae)} types meet every target")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
