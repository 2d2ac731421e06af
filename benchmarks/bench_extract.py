"""Benchmark: the extract stage against a DCASE-baseline-style loop, both as whole processes.

Baseline: a fresh ``python`` process that imports librosa and runs
``librosa.load(sr=16000)`` + ``librosa.feature.melspectrogram`` + ``power_to_db``
file by file, the way the DCASE 2020 baseline reads clips, and saves the stacked
test log-mels. Ours: ``python -m analysis extract fan`` as DVC runs it. Both
are timed from process start to exit (imports, start-up and writing included)
on the same generated 10 s clips (default 900 train + 300 test, a DCASE
machine ID's size), in the same run; the ratio is what to read (the machine
is shared and noisy). Peak memory is measured at 500 and at 2,000 train clips:
it should not grow with the number of clips (train spectrograms are streamed).

Usage: python benchmarks/bench_extract.py [--train 900] [--test 300] [--memory-clips 500 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

BASELINE = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {root!r})
from analysis.mel import MelGeometry
geometry = MelGeometry()
root = Path({data!r}) / "fan"
for f in sorted((root / "train").glob("*.wav")):
    geometry.librosa_log_mel(f)
test = [geometry.librosa_log_mel(f)[:, :320] for f in sorted((root / "test").glob("*.wav"))]
np.save({out!r}, np.stack(test))
"""


def make_clips(root: Path, n_train: int, n_test: int) -> Path:
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


def timed_process(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of one whole process, from start to exit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    subprocess.run(
        cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def stage_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "analysis", "--params", str(ROOT / "params.yaml"), *args]


def extract_cmd(data_root: Path, out: Path) -> list[str]:
    return stage_cmd("extract", "fan", "--data-root", str(data_root), "--out", str(out))


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


def make_long_clip_tree(root: Path, seconds: float) -> Path:
    """A type folder whose one test clip lasts ``seconds`` (written in blocks, never held)."""
    make_clips(root, 4, 2)
    path = root / "fan" / "test" / "normal_id_00_99999999.wav"
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as out:
        for _ in range(int(seconds // 60)):
            out.write((0.05 * rng.standard_normal(60 * 16000)).astype(np.float32))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=900)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--memory-clips", type=int, nargs="*", default=[500, 2000])
    parser.add_argument("--long-clip-s", type=float, default=3600, help="one clip this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_clips(tmp / "data", args.train, args.test)
        n = args.train + args.test
        baseline = [sys.executable, "-c"]
        baseline.append(BASELINE.format(root=str(ROOT), data=str(root), out=str(tmp / "b.npy")))
        # As in `dvc repro`: the first stage writes librosa's mel filter bank once per run, into
        # build/ of the working directory, and every extract process reads it from there.
        table = ("--mel-table", str(tmp / "build" / "mel_filters.npz"))
        check_s = timed_process(stage_cmd("check-params", *table), cwd=tmp)
        timed_process(extract_cmd(root, tmp / "warm"), cwd=tmp)  # page cache and .pyc warm
        base_s = timed_process(baseline, cwd=tmp)
        ours_s = timed_process(extract_cmd(root, tmp / "out"), cwd=tmp)
        print(f"clips: {n} ({args.train} train + {args.test} test, 10 s each), whole processes")
        print(f"baseline loop (librosa.load + melspectrogram, 1 process): {base_s:6.1f} s")
        print(f"python -m analysis extract fan:                           {ours_s:6.1f} s")
        print(f"ratio extract / baseline: {base_s / ours_s:.2f}x")
        print(f"(once per dvc repro, not per type: check-params + mel filter bank {check_s:.1f} s)")
        for count in args.memory_clips:
            mem_root = make_clips(tmp / f"mem{count}", count, 20)
            print(
                f"peak memory at {count:5d} train clips: {peak_memory_mb(mem_root, tmp / f'memout{count}'):7.1f} MB"
            )
        long_root = make_long_clip_tree(tmp / "long", args.long_clip_s)
        peak = peak_memory_mb(long_root, tmp / "longout")
        print(
            f"peak memory with one {args.long_clip_s / 60:.0f}-minute clip: {peak:7.1f} MB "
            "(target: at most 300 MB; extract reads only the frames it keeps)"
        )


if __name__ == "__main__":
    main()
