"""Benchmark: a cold `dvc repro` of the default pipeline, with each stage's share.

Copies the project's pipeline files into a throwaway git + DVC repo (so your
own build/ and DVC cache are untouched), runs `dvc repro` once from nothing,
and times each stage from DVC's "Running stage" lines. Target: about three
minutes on a 2-core machine.

Usage: python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "analysis",
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    "report/report.qmd.j2",
    "report/crossref.lua",
    "report/tabsets.lua",
    "report/report-js.html",
    "report/style.css",
    "report/typst-metadata.yaml",
]


def main() -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in FILES:
            dst = work / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, dst)
        for cmd in (
            ["git", "init", "-q"],
            [sys.executable, "-m", "dvc", "init", "-q"],
            [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
        ):
            subprocess.run(cmd, cwd=work, check=True, env=env)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        marks: list[tuple[str, float]] = []
        for line in proc.stdout:
            found = re.search(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found[1], time.perf_counter()))
        if proc.wait() != 0:
            raise SystemExit("dvc repro failed")
        end = time.perf_counter()
    total = end - start
    print(f"cold dvc repro: {total:.1f} s")
    groups: dict[str, float] = {}
    for (stage, t0), (_, t1) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        groups[stage.split("@")[0]] = groups.get(stage.split("@")[0], 0.0) + (t1 - t0)
    for stage, seconds in groups.items():
        print(f"  {stage:<11} {seconds:6.1f} s  {seconds / total:6.1%}")
    print(
        f"  {'dvc itself':<11} {total - sum(groups.values()):6.1f} s  {(total - sum(groups.values())) / total:6.1%}"
    )


if __name__ == "__main__":
    main()
