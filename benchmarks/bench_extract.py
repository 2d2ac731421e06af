"""Benchmark: the extract stage against a DCASE-baseline-style loop, and its peak memory.

Baseline: ``librosa.load(sr=16000)`` + ``librosa.feature.melspectrogram`` +
``power_to_db`` per file in one process, the way the DCASE 2020 baseline reads
clips. Both run on the same generated 10 s clips in the same run; the ratio
is what to read (the machine is shared and noisy). Peak memory is measured in
a fresh process at 500 and at 2,000 train clips: it should not grow with the
number of clips, because train spectrograms are streamed.

Usage: python benchmarks/bench_extract.py [--clips 500] [--memory-clips 500 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.mel import MelGeometry  # noqa: E402


def make_clips(root: Path, n_train: int, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(160000) / 16000
    for split in ("train", "test"):
        (root / "fan" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        y = 0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(
            2 * np.pi * rng.uniform(200, 2000) * t
        )
        split, label = (
            ("train", "normal") if i < n_train else ("test", "normal" if i % 2 else "anomaly")
        )
        sf.write(
            root / "fan" / split / f"{label}_id_00_{i:08d}.wav",
            y.astype(np.float32),
            16000,
            subtype="PCM_16",
        )
    return root


def baseline_loop(files: list[Path]) -> float:
    """Seconds for the DCASE-baseline loop: one file at a time through plain librosa."""
    geometry = MelGeometry()
    start = time.perf_counter()
    for f in files:
        geometry.librosa_log_mel(f)
    return time.perf_counter() - start


def peak_memory_mb(data_root: Path, out: Path) -> float:
    """Peak RSS (MB) of the largest process of one `python -m analysis extract fan` run."""
    code = (
        "import resource, subprocess, sys;"
        f"subprocess.run([sys.executable, '-m', 'analysis', 'extract', 'fan', '--data-root', {str(data_root)!r}, '--out', {str(out)!r}], check=True, stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--memory-clips", type=int, nargs="*", default=[500, 2000])
    args = parser.parse_args()
    from analysis.extract import extract
    from analysis.params import load_params
    from analysis.workers import resolve_n_jobs

    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_clips(tmp / "data", args.clips)
        files = sorted((root / "fan").rglob("*.wav"))
        base_s = baseline_loop(files)
        start = time.perf_counter()
        extract(params, "fan", data_root=root, out_dir=tmp / "out")
        ours_s = time.perf_counter() - start
        n = len(files)
        print(f"clips: {n} (10 s each); processes: {resolve_n_jobs(params['features']['n_jobs'])}")
        print(
            f"baseline loop (librosa.load + melspectrogram, 1 process): {n / base_s:8.1f} clips/s"
        )
        print(
            f"extract stage:                                            {n / ours_s:8.1f} clips/s"
        )
        print(f"ratio extract / baseline: {base_s / ours_s:.2f}x")
        for count in args.memory_clips:
            mem_root = make_clips(tmp / f"mem{count}", count)
            print(
                f"peak memory at {count:5d} train clips: {peak_memory_mb(mem_root, tmp / f'memout{count}'):7.1f} MB"
            )


if __name__ == "__main__":
    main()
