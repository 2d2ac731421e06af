"""Benchmark: a cold `dvc repro`, with each stage's time, share and peak memory.

Copies the project's pipeline files into a throwaway git + DVC repo (your own
build/ and DVC cache are untouched) and runs `dvc repro` once from nothing.
Each stage's time comes from DVC's "Running stage" lines; its peak memory is
the largest sum of proportional set size (PSS: a page shared by k processes
counts 1/k in each) over the stage's processes (the stage and its pool workers),
sampled every 50 ms, with the summed resident memory (RSS, which counts the pages
a forked worker shares with its parent once per process) beside it; its CPU time is the sum over those
processes of user + system seconds (sampled too: each process's last 50 ms are
missed), and DVC's own CPU time (hashing, locking) is that of the `dvc repro`
process over the same interval. CPU seconds, unlike wall time, barely change
when other work shares the machine.

Default: the project's params.yaml (target: 60 s on 2 cores).
``--scale``: a synthetic set about a quarter of the DCASE 2020 Task 2
development set (23 machine IDs x 305 clips = 7,015 clips, in the development
set's proportions: 225 train, 25 normal and 55 anomalous test clips per ID),
and a linear extrapolation of each stage to the full set (about 31,000 clips).

Default runs: after the cold run, ``downstream.enabled=true`` and `dvc repro` again, which
times the downstream stage (target: 10 min on 2 cores); ``--no-downstream`` skips it.

``--keep DIR`` copies the cold run's outputs (``build/``, ``report/figures/``, ``report/_output/``)
to DIR, so two versions of the code can be compared byte for byte (``sha256sum``).

Usage: python benchmarks/bench_pipeline.py [--scale] [--no-downstream] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.dcase import MACHINE_IDS  # noqa: E402
from analysis.render import REPORT_DIR, TEMPLATE_FILES  # noqa: E402

FILES = [
    "analysis",
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    *(f"{REPORT_DIR}/{name}" for name in TEMPLATE_FILES),
]
# A quarter of the development set, per machine ID (23 IDs): 7,015 clips.
SCALE = {
    "train_clips_per_id": 225,
    "test_normal_clips_per_id": 25,
    "test_anomaly_clips_per_id": 55,
}
FULL_DEV_SET_CLIPS = 31_000
DOWNSTREAM_TARGET_S = (
    600  # the downstream stage, enabled, on the default data and 2 cores (issue 36)
)
# Stages whose work grows with the number of clips (recommend with the regions found in them);
# masks, figures and the report do the same work for any number of clips of the same IDs.
SCALES_WITH_CLIPS = ("synthesize", "extract", "localize", "power", "recommend")


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process (``/proc/PID/smaps_rollup``), or None where the
    kernel has no rollup (not Linux, before 4.14) or the process has ended.

    A page shared by k processes counts 1/k in each, so the PSS summed over a stage's
    processes is the memory they really hold together; summed RSS counts the pages a forked
    pool worker shares with its parent (the parent's arrays, memory-mapped features) once
    per process."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory(threading.Thread):
    """Samples the summed PSS and RSS and the CPU seconds of a process tree; ``take()``
    returns the peak summed PSS (RSS where there is no PSS), the CPU seconds of the processes
    seen since the last ``take()`` (the root's excluded), the root's CPU seconds over that
    interval and the peak summed RSS, and starts a new interval."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.period_s, self.running = psutil.Process(pid), period_s, True
        self.peak_pss, self.peak_rss = 0, 0
        self.lock = threading.Lock()
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds last seen
        self.root_cpu, self.root_mark = 0.0, 0.0

    def run(self) -> None:
        while self.running:
            rss_total, pss_total = 0, 0
            try:
                # The stage's processes: DVC's own (the root) is not counted.
                children = self.root.children(recursive=True)
                times = self.root.cpu_times()
            except psutil.Error:
                return
            cpu = {}
            for proc in children:
                with contextlib.suppress(psutil.Error):  # it may have just ended
                    rss = proc.memory_info().rss
                    pss = pss_bytes(proc.pid)
                    rss_total += rss
                    pss_total += rss if pss is None else pss
                    t = proc.cpu_times()
                    cpu[proc.pid] = t.user + t.system
            with self.lock:
                self.peak_pss = max(self.peak_pss, pss_total)
                self.peak_rss = max(self.peak_rss, rss_total)
                self.cpu.update(cpu)
                self.root_cpu = times.user + times.system
            time.sleep(self.period_s)

    def take(self) -> tuple[int, float, float, int]:
        with self.lock:
            peak, self.peak_pss = self.peak_pss, 0
            rss, self.peak_rss = self.peak_rss, 0
            cpu, self.cpu = sum(self.cpu.values()), {}
            root, self.root_mark = self.root_cpu - self.root_mark, self.root_cpu
        return peak, cpu, root, rss


def set_params(work: Path, changes: dict[str, object]) -> None:
    """Set dotted ``params.yaml`` keys (``{"synthetic.strength": 2.0}``) in the copy."""
    path = work / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(work: Path, synthetic: dict[str, object], env: dict) -> int:
    """A throwaway copy of the pipeline with ``synthetic.*`` overrides; returns the number
    of clips it will synthesize."""
    for name in FILES:
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    set_params(work, {f"synthetic.{k}": v for k, v in synthetic.items()})
    params = yaml.safe_load((work / "params.yaml").read_text())
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=work, check=True, env=env)
    s = params["synthetic"]
    types = params["data"]["machine_types"]
    n_ids = sum(min(s["ids_per_type"], len(MACHINE_IDS[t])) for t in types)
    per_id = sum(s[f"{k}_clips_per_id"] for k in ("train", "test_normal", "test_anomaly"))
    return n_ids * per_id


def grouped(stages: list[tuple]) -> dict[str, list[float]]:
    """Seconds, peak memory (PSS), stage CPU seconds, DVC's CPU seconds and peak RSS per stage,
    ``extract@fan`` and its kind summed as ``extract``."""
    groups: dict[str, list[float]] = {}
    for stage, seconds, (peak, cpu, dvc_cpu, rss) in stages:
        entry = groups.setdefault(stage.split("@")[0], [0.0, 0.0, 0.0, 0.0, 0.0])
        entry[0] += seconds
        entry[1] = max(entry[1], peak)
        entry[2] += cpu
        entry[3] += dvc_cpu
        entry[4] = max(entry[4], rss)
    return groups


def run_repro(work: Path, env: dict) -> tuple[float, list[tuple]]:
    """Cold `dvc repro`; returns the total seconds and (stage, seconds, (peak PSS bytes, CPU
    seconds, DVC's CPU seconds, peak RSS bytes)) in order."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    memory = PeakMemory(proc.pid)
    memory.start()
    marks: list[tuple[str, float, int]] = []
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        found = re.search(r"Running stage '([^']+)'", line)
        if found:
            marks.append((found[1], time.perf_counter(), memory.take()))
            print(f"  ... {found[1]}", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise SystemExit("dvc repro failed:\n" + "".join(tail))
    end = time.perf_counter()
    memory.running = False
    last_peak = memory.take()
    stages = []
    for i, (stage, t0, _) in enumerate(marks):
        t1 = marks[i + 1][1] if i + 1 < len(marks) else end
        peak = marks[i + 1][2] if i + 1 < len(marks) else last_peak
        stages.append((stage, t1 - t0, peak))
    return end - start, stages


KEPT = ("build", "report/figures", "report/_output", "report/report.qmd")


def keep_outputs(work: Path, dest: Path) -> None:
    """Copy the run's outputs (``KEPT``) from the throwaway project to ``dest``."""
    for name in KEPT:
        src = work / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="a quarter of the DCASE dev set")
    parser.add_argument(
        "--no-downstream",
        action="store_true",
        help="skip the second run with downstream.enabled=true (default params only)",
    )
    parser.add_argument("--keep", type=Path, help="copy the cold run's outputs to this folder")
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    downstream = None
    with tempfile.TemporaryDirectory() as tmp:
        n_clips = make_project(Path(tmp), SCALE if args.scale else {}, env)
        total, stages = run_repro(Path(tmp), env)
        if args.keep:
            keep_outputs(Path(tmp), args.keep)
        if not args.scale and not args.no_downstream:
            # What `dvc exp run -S downstream.enabled=true` adds: the stage and what reads it.
            set_params(Path(tmp), {"downstream.enabled": True})
            _, again = run_repro(Path(tmp), env)
            downstream = grouped(again).get("downstream", [0.0] * 5)
    groups = grouped(stages)
    label = "scale set" if args.scale else "default params"
    print(f"cold dvc repro ({label}, {n_clips} clips): {total:.1f} s")
    print(
        f"  {'stage':<13}{'time':>9}{'share':>8}{'peak PSS':>11}{'peak RSS':>11}{'CPU':>10}"
        f"{'DVC CPU':>10}"
    )
    for stage, (seconds, peak, cpu, dvc_cpu, rss) in groups.items():
        print(
            f"  {stage:<13}{seconds:7.1f} s{seconds / total:8.1%}{peak / 2**20:8.0f} MB"
            f"{rss / 2**20:8.0f} MB{cpu:8.1f} s{dvc_cpu:8.1f} s"
        )
    overhead = total - sum(g[0] for g in groups.values())
    cpu_sum = sum(g[2] for g in groups.values())
    dvc_sum = sum(g[3] for g in groups.values())
    print(f"  {'dvc itself':<13}{overhead:7.1f} s{overhead / total:8.1%}  (before the first stage)")
    print(f"  CPU seconds: stages {cpu_sum:.1f}, DVC within stages {dvc_sum:.1f}")
    if downstream is not None:
        print(
            f"downstream.enabled=true on the same data: the downstream stage took "
            f"{downstream[0]:.1f} s ({downstream[0] / DOWNSTREAM_TARGET_S:.2f} of the "
            f"{DOWNSTREAM_TARGET_S} s target), {downstream[2]:.0f} s of CPU (its processes; "
            f"{downstream[2] / 2:.0f} s of wall on 2 idle cores), peak memory "
            f"{downstream[1] / 2**20:.0f} MB"
        )
    if args.scale:
        factor = FULL_DEV_SET_CLIPS / n_clips
        grown = sum(e[0] * (factor if g in SCALES_WITH_CLIPS else 1) for g, e in groups.items())
        print(
            f"extrapolated to the full development set ({FULL_DEV_SET_CLIPS} clips, x{factor:.1f} "
            f"for {', '.join(SCALES_WITH_CLIPS)}; synthesize is not run on real data): "
            f"{(grown - groups['synthesize'][0] * factor + overhead) / 60:.0f} min"
        )


if __name__ == "__main__":
    main()
