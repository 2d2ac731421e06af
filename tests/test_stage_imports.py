"""What a stage process loads at start-up: every ``python -m analysis STAGE`` pays for the
libraries its modules import at their top, whether or not the stage uses them (torch about
2.5 s of CPU, seaborn 2.4 s, scipy.stats 1 s, scipy.ndimage 0.45 s). A stage imports only
what it uses; the rest is imported inside the function that needs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "scipy.stats", "scipy.ndimage", "matplotlib", "seaborn", "librosa")

# Stage module -> heavy libraries (and packages of this project) it must not load at import.
MUST_NOT_LOAD = {
    "analysis.params": (*HEAVY, "numpy", "analysis.strategies"),
    "analysis.__main__": (*HEAVY, "analysis.strategies"),
    "analysis.check_params": ("torch", "scipy.stats", "scipy.ndimage", "seaborn"),
    "analysis.synthesize": (*HEAVY, "analysis.strategies"),
    "analysis.extract": (*HEAVY, "analysis.strategies"),
    "analysis.localize": ("torch", "scipy.stats", "matplotlib", "librosa", "analysis.strategies"),
    "analysis.power": ("torch", "scipy.stats", "matplotlib", "librosa", "analysis.strategies"),
    "analysis.masks": ("torch", "scipy.stats", "scipy.ndimage", "matplotlib", "librosa"),
    "analysis.recommend": ("torch", "scipy.stats", "scipy.ndimage", "matplotlib", "librosa"),
    # With downstream.enabled false (the default) the stage writes a "not run" record.
    "analysis.downstream": ("torch", "scipy.stats", "scipy.ndimage", "matplotlib", "librosa"),
    "analysis.report": ("torch", "scipy.stats", "scipy.ndimage", "matplotlib", "librosa"),
}


def loaded_after_import(module: str) -> set[str]:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", MUST_NOT_LOAD)
def test_a_stage_loads_at_start_up_only_what_it_uses(module):
    loaded = loaded_after_import(module)
    unwanted = [
        name
        for name in MUST_NOT_LOAD[module]
        if name in loaded or any(m.startswith(f"{name}.") for m in loaded)
    ]
    assert not unwanted, f"{module} imports {unwanted} at start-up"
