"""Benchmark: is the synthetic default as hard as DCASE for the DCASE 2020 baseline autoencoder?

Writes a calibration-size synthetic set with ``synthesize`` (the default params but more clips
per ID), trains the baseline autoencoder (``analysis.baseline_ae``: the published feature,
network and recipe, fewer epochs) once per machine type on its train clips, and prints per type
and ID the AUC and pAUC (max FPR 0.1) beside the published development-set figures, with the
targets' pass/fail (``analysis.calibration``): type AUC within +-6 points, pAUC within +-8,
the IDs' AUC range at least half the published one, no ID at 100 %. The cheap z-score detector
the CI guard uses is printed beside it (its band in tests/test_calibration.py comes from here).

Usage: python benchmarks/bench_calibration.py [--train 200] [--test 50] [--epochs 5]
       [--strength 1.0] [--types fan pump ...] [--detectors ae z] [--no-peak] [--keep DIR]
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
)
from analysis.dcase import parse_clip_name
from analysis.detection import zscore_scores
from analysis.params import validate_params
from analysis.synthesize import synthesize
from analysis.synthesize_machines import PUBLISHED_REALISM
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


def _peak_profile(path: str) -> np.ndarray:
    """The published peak figure's per-clip profile: 128-bin HTK log-mel (power 2, 80 dB floor),
    313 frames, standardized by the clip's own mean and std, averaged over time."""
    import librosa

    y, sr = sf.read(path, dtype="float32")
    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=1024, hop_length=512, n_mels=128, htk=True, norm=None, power=2.0
    )
    db = librosa.power_to_db(mel, ref=1.0, top_db=80.0)[:, :313]
    return ((db - db.mean()) / db.std()).mean(axis=1)


def time_averaged_peak(root: Path, machine_type: str, n_jobs: int) -> float:
    """Median over IDs of the peak over mel bins of |mean anomalous - mean normal| profile
    (the figure tests/test_synthesize.py holds within 0.5x-2x of the published one)."""
    peaks = []
    test = root / machine_type / "test"
    ids = sorted({parse_clip_name(p.name)[1] for p in test.glob("*.wav")})
    with process_pool(n_jobs) as pool:
        for machine_id in ids:
            normal = sorted(map(str, test.glob(f"normal_{machine_id}_*.wav")))
            anomalous = sorted(map(str, test.glob(f"anomaly_{machine_id}_*.wav")))
            a = np.mean(list(pool.map(_peak_profile, anomalous, chunksize=8)), axis=0)
            n = np.mean(list(pool.map(_peak_profile, normal, chunksize=8)), axis=0)
            peaks.append(float(np.abs(a - n).max()))
    return float(np.median(peaks))


def detector_scores(data: dict, detector: str, epochs: int) -> np.ndarray:
    """Test-clip scores of one detector: the baseline AE (one model per type) or z-score (per ID)."""
    train, test = data["train"], data["test"]
    if detector == "ae":
        import torch

        torch.set_num_threads(1)
        model = train_autoencoder(train["logmel"], BaselineConfig(epochs=epochs), device="cpu")
        return anomaly_scores(model, test["logmel"])
    test_logmels = np.stack(test["logmel"])
    n_frames = np.full(len(test_logmels), test_logmels.shape[2])
    return zscore_scores(
        np.stack(train["logmel"]), train["machine_id"], test_logmels, test["machine_id"], n_frames
    )


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
    parser.add_argument(
        "--no-peak", action="store_true", help="skip the time-averaged peak (published band)"
    )
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
            if not args.no_peak:
                peak = time_averaged_peak(root, machine_type, resolve_n_jobs(args.n_jobs))
                published = PUBLISHED_REALISM[machine_type]
                ok = 0.5 * published <= peak <= 2 * published
                print(
                    f"  {machine_type:<12}time-averaged peak {peak:.2f} (published {published}, "
                    f"band {0.5 * published:.2f}-{2 * published:.2f}: {'pass' if ok else 'FAIL'})",
                    flush=True,
                )
    ae = [c for d, c in checks if d == "ae"]
    if ae:
        passed = sum(c.ok for c in ae)
        print(f"baseline AE: {passed} of {len(ae)} types meet every target")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
