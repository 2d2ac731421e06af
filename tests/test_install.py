"""The package installs and its strategies run where only numpy and torch are: a wheel built from
the project, installed into a fresh virtual environment (offline, no dependencies) that sees this
environment's numpy and torch and nothing else, used from another working directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# What `import torch` itself needs besides torch's own folders (measured: nothing else loads).
VISIBLE = ("numpy", "torch", "typing_extensions")

USE = """
import json, sys, warnings
from pathlib import Path

import numpy as np
from analysis.strategies import (
    AudioSpecificStrategy, MachineSpecificStrategy, PerlinStrategy, TrainingAudioStrategy,
    TrainingPerlinStrategy, build_strategy,
)

shape = (128, 320)
made = {
    "audio_specific": AudioSpecificStrategy(shape, None, 128, 320, seed=0),
    "in_hz": AudioSpecificStrategy(shape, None, min_band_hz=40.0, max_band_hz=2000.0, seed=0),
    "training": TrainingAudioStrategy(shape, None, 128, 320, perlin_prob=0.5),
    "dsr_perlin": TrainingPerlinStrategy(shape, (32, 80), seed=0),
    "perlin": PerlinStrategy(shape, None, seed=0),
    "factory": build_strategy({"kind": "training_audio"}, shape, seed=1),
}
with warnings.catch_warnings(record=True):
    warnings.simplefilter("always")
    made["machine"] = MachineSpecificStrategy(
        shape, None, 128, 320, machine_type="fan", recommendations=Path(sys.argv[1]).resolve()
    )
    out = {name: list(s(2, "cpu").shape) for name, s in made.items()}
    out["machine_fallback"] = list(made["machine"](1, "cpu", machine_type="pump").shape)
heavy = ("scipy", "librosa", "matplotlib", "yaml", "pandas", "soundfile", "dvc", "jinja2")
out["loaded_heavy"] = sorted(m for m in heavy if m in sys.modules)
out["package_file"] = __import__("analysis").__file__
print(json.dumps(out))
"""


def top_level_names(dist_name: str) -> set[str]:
    """The import names a distribution installs (its top-level folders and modules)."""
    names = set()
    for file in distribution(dist_name).files or []:
        first = Path(file).parts[0]
        if first != ".." and not first.endswith((".dist-info", ".data")) and first != "__pycache__":
            names.add(first)
    return names


def test_wheel_installs_into_a_fresh_venv_with_only_numpy_and_torch(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "analysis", src / "analysis", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("mask_analysis-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith("METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        assert any(n.startswith("analysis/strategies/training.py") for n in zf.namelist())
    assert sorted(r for r in requires if "extra ==" not in r) == ["numpy", "torch"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", site, wheel], check=True
    )
    # This environment's numpy and torch, and nothing else of it, through a .pth folder.
    shim = tmp_path / "shim"
    shim.mkdir()
    here = Path(distribution("numpy").locate_file(""))
    for dist_name in VISIBLE:
        for name in top_level_names(dist_name.replace("_", "-")):
            if (here / name).exists():
                (shim / name).symlink_to(here / name)
    (site / "visible.pth").write_text(f"{shim}\n")

    elsewhere = tmp_path / "training_repo"
    elsewhere.mkdir()
    from tests.test_strategies import verdict_json

    recs = {  # fan switches to its fit; pump, without enough evidence, draws the user's preset
        "presets": {"current": {"kind": "audio_specific"}},
        "rows": [
            {
                "machine_type": "fan",
                "machine_id": "all",
                "status": "ok",
                "fitted": {"max_bands": 2},
                "verdict": verdict_json("switch"),
            },
            {
                "machine_type": "pump",
                "machine_id": "all",
                "status": "not enough evidence",
                "verdict": verdict_json("not_enough_evidence", None),
            },
        ],
    }
    (tmp_path / "exported.json").write_text(json.dumps(recs))
    python = venv / "bin" / "python"
    blocked = subprocess.run([python, "-c", "import scipy"], cwd=elsewhere, capture_output=True)
    assert blocked.returncode != 0, "the fresh environment must not see the project's scipy"
    result = subprocess.run(
        [python, "-c", textwrap.dedent(USE), str(tmp_path / "exported.json")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert Path(out.pop("package_file")).is_relative_to(site)  # the installed copy, not ROOT
    assert out.pop("loaded_heavy") == []
    assert out.pop("dsr_perlin") == [2, 1, 32, 80]
    assert all(
        shape == [2, 1, 128, 320] for name, shape in out.items() if name != "machine_fallback"
    )
    assert out["machine_fallback"] == [1, 1, 128, 320]
