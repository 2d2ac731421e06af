"""Benchmark: the whole pipeline on a full-size DCASE 2020 Task 2 development-set layout.

Writes the development set's layout and clip counts (about 31,000 clips of 10 s: per type
train / test as published, test normals per ID as published, the rest anomalous) with cheap
sounds (a bank of pre-encoded noise-plus-tone clips per type, anomalies with an added tone,
copied to disk: the point is I/O and compute, not realism), then runs a cold `dvc repro` on
it in a throwaway copy of the project, whole-process, and prints per stage its wall time,
peak memory (the summed PSS of the stage's processes, sampled every 50 ms, with their summed
RSS beside it: RSS counts the pages a forked pool worker shares with its parent once per
process), its CPU seconds and clips/s. CPU seconds barely change when other work shares the
machine, so on a loaded machine they, not the wall time, tell what a quiet run would take.
In the same run, the extract benchmark's whole-process baseline loop (librosa.load +
melspectrogram + power_to_db per file, one process; ``benchmarks/bench_extract.py``) reads
the fan clips, beside the ``extract@fan`` stage's time on the same clips.

Targets on 2 cores: extract of all clips <= 3 min, the full cold `dvc repro` <= 6 min, peak
memory <= 4 GB at any stage, the PDF within its page budget. ``--fraction`` writes that share
of every count (at least a few clips per ID and label) and extrapolates the stages that grow
with the clips to the full set.

Usage: python benchmarks/bench_scale.py [--fraction 1.0] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_extract import BASELINE  # noqa: E402
from bench_pipeline import FILES, grouped, run_repro, set_params  # noqa: E402

from analysis.dcase import MACHINE_IDS, clip_name  # noqa: E402

# DCASE 2020 Task 2 development set (Zenodo 3678171): train / test clips per type, and
# normal test clips per ID (the rest of each type's test clips are anomalous).
DEV_SET = {
    "fan": (3675, 1875, 100),
    "pump": (3349, 856, 100),
    "slider": (2804, 1290, 100),
    "valve": (3291, 879, 100),
    "ToyCar": (4000, 2459, 350),
    "ToyConveyor": (3000, 3509, 800),
}
TARGETS = {"extract_s": 180.0, "repro_s": 360.0, "peak_mb": 4096.0, "pdf_pages": 20}
# Stages whose work grows with the clips (downstream is off by default: its "not run" record
# does not grow). power grows with them only up to power.max_normal_clips_per_id normal clips
# per ID (200: at fractions below about 0.25 every ID is under it), so at small fractions the
# linear extrapolation overstates it.
SCALES_WITH_CLIPS = ("extract", "localize", "power", "recommend")
MIN_PER_GROUP = 6  # clips per (ID, split, label) at small fractions
BANK = 24  # distinct sounds per (type, label)
SR, SECONDS = 16000, 10.0


def clip_counts(fraction: float) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Per type and ID: (train, normal test, anomalous test) clips at ``fraction`` of the set."""
    out = {}
    for machine_type, (train, test, normal_per_id) in DEV_SET.items():
        ids = MACHINE_IDS[machine_type]
        anomaly_per_id = (test - normal_per_id * len(ids)) / len(ids)
        out[machine_type] = {
            mid: tuple(
                max(MIN_PER_GROUP, round(n * fraction))
                for n in (train / len(ids), normal_per_id, anomaly_per_id)
            )
            for mid in ids
        }
    return out


def sound_bank(machine_type: str, label: int) -> list[bytes]:
    """``BANK`` encoded 10 s clips: noise plus the type's tone, anomalies with a second tone."""
    rng = np.random.default_rng([len(machine_type), label])
    t = np.arange(int(SR * SECONDS)) / SR
    base_hz = 300 + 150 * sorted(DEV_SET).index(machine_type)
    out = []
    for _ in range(BANK):
        y = 0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(2 * np.pi * base_hz * t)
        if label:
            y += 0.03 * np.sin(2 * np.pi * rng.uniform(2000, 4000) * t)
        buffer = io.BytesIO()
        sf.write(buffer, y.astype(np.float32), SR, subtype="PCM_16", format="WAV")
        out.append(buffer.getvalue())
    return out


def write_dev_set(root: Path, fraction: float) -> int:
    """The development-set layout under ``root``; returns the number of clips written."""
    n = 0
    counts = clip_counts(fraction)
    start = time.perf_counter()
    for machine_type, per_id in counts.items():
        banks = [sound_bank(machine_type, 0), sound_bank(machine_type, 1)]
        for split in ("train", "test"):
            (root / machine_type / split).mkdir(parents=True, exist_ok=True)
        for mid, (n_train, n_normal, n_anomaly) in per_id.items():
            groups = [("train", 0, n_train), ("test", 0, n_normal), ("test", 1, n_anomaly)]
            for split, label, count in groups:
                for i in range(count):
                    path = root / machine_type / split / clip_name(label, mid, i)
                    path.write_bytes(banks[label][(i * 7 + n) % BANK])
                    n += 1
        print(f"  wrote {machine_type} ({n} clips so far)", file=sys.stderr, flush=True)
    print(f"wrote {n} clips in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return n


def make_project(work: Path, data_root: Path, env: dict) -> None:
    """A throwaway copy of the pipeline reading ``data_root`` (all six types)."""
    for name in FILES:
        src, dst = ROOT / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    set_params(work, {"data.root": str(data_root), "data.machine_types": list(DEV_SET)})
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=work, check=True, env=env)


def baseline_seconds(data_root: Path, tmp: Path) -> float:
    """The extract benchmark's whole-process baseline loop over the fan clips."""
    code = BASELINE.format(root=str(ROOT), data=str(data_root), out=str(tmp / "baseline.npy"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def pdf_pages(work: Path) -> int | None:
    from pypdf import PdfReader

    pdf = work / "report/_output/report.pdf"
    return len(PdfReader(pdf).pages) if pdf.is_file() else None


def print_results(stages, total_s, n_clips, per_type, fraction, base_s, pages) -> None:
    """Per stage: time, peak memory, clips/s; then the targets, extrapolated to the full set."""
    print(f"cold dvc repro on {n_clips} clips (fraction {fraction:g} of the development set)")
    print(f"  {'stage':<24}{'time':>9}{'CPU':>9}{'peak PSS':>11}{'peak RSS':>11}{'clips/s':>10}")
    for stage, seconds, (peak, cpu, _dvc_cpu, rss) in stages:
        kind, _, machine_type = stage.partition("@")
        n = per_type.get(machine_type, n_clips)
        rate = f"{n / seconds:8.0f}" if kind in SCALES_WITH_CLIPS and seconds > 0 else "       –"
        print(
            f"  {stage:<24}{seconds:7.1f} s{cpu:7.1f} s{peak / 2**20:8.0f} MB"
            f"{rss / 2**20:8.0f} MB  {rate}"
        )
    groups = grouped(stages)
    overhead = total_s - sum(g[0] for g in groups.values())
    print(f"  {'dvc itself':<24}{overhead:7.1f} s")
    print(f"  total {total_s:.1f} s, {n_clips / total_s:.0f} clips/s")
    fan_s = next(s for stage, s, _ in stages if stage == "extract@fan")
    print(
        f"extract@fan {fan_s:.1f} s vs the baseline loop on the same {per_type['fan']} clips "
        f"{base_s:.1f} s: ratio baseline / extract {base_s / fan_s:.2f}x"
    )
    factor = 1 / fraction
    extract_full = groups["extract"][0] * factor
    cpu_total = sum(e[2] for e in groups.values())
    print(
        f"  stage CPU seconds, all stages: {cpu_total:.0f} s ({cpu_total / total_s:.2f} cores busy)"
    )
    repro_full = sum(e[0] * (factor if g in SCALES_WITH_CLIPS else 1) for g, e in groups.items())
    peak_stage = max(groups, key=lambda g: groups[g][1])
    peak_mb = groups[peak_stage][1] / 2**20
    rss_mb = max(e[4] for e in groups.values()) / 2**20
    print(f"extrapolated to the full set (x{factor:.1f} for {', '.join(SCALES_WITH_CLIPS)}):")
    print(f"  extract, all types: {extract_full:6.0f} s (target {TARGETS['extract_s']:.0f} s)")
    print(
        f"  cold dvc repro:     {repro_full + overhead:6.0f} s (target {TARGETS['repro_s']:.0f} s)"
    )
    print(
        f"  peak memory measured here: {peak_mb:.0f} MB PSS in {peak_stage} (summed RSS "
        f"{rss_mb:.0f} MB; target {TARGETS['peak_mb']:.0f} MB; grows with the clips of the "
        "largest type for extract, localize and power)"
    )
    print(f"  report PDF pages: {pages} (budget {TARGETS['pdf_pages']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of every clip count")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and project")
    parser.add_argument("--keep", action="store_true", help="keep the data and project")
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        data_root = work / "data"
        n_clips = write_dev_set(data_root, args.fraction)
        per_type = {
            t: sum(sum(c) for c in ids.values()) for t, ids in clip_counts(args.fraction).items()
        }
        project = work / "project"
        make_project(project, data_root, env)
        load_before = os.getloadavg()[0]
        base_s = baseline_seconds(data_root, work)  # also warms the page cache for fan
        total_s, stages = run_repro(project, env)
        print(
            f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} cores (above the core count, other work shared the machine)"
        )
        pages = pdf_pages(project)
        record = {"n_clips": n_clips, "total_s": total_s, "baseline_s": base_s, "pages": pages}
        record["stages"] = [[stage, seconds, list(extra)] for stage, seconds, extra in stages]
        (work / "results.json").write_text(json.dumps(record, indent=1))
        print_results(stages, total_s, n_clips, per_type, args.fraction, base_s, pages)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
