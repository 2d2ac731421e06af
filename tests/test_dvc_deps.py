"""dvc.yaml lists exactly the project code each stage runs, so a code change reruns exactly the
stages it can affect. The imports are read from the source (function-level ones included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from analysis.params import SPEC
from tests.conftest import ROOT


def analysis_imports(path: Path) -> set[str]:
    """Files of the ``analysis`` package that ``path`` imports, anywhere in the module (for
    ``__main__.py`` only at module level: each stage's handler imports just its own module)."""
    found = set()
    tree = ast.parse(path.read_text())
    nodes = tree.body if path.name == "__main__.py" else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("analysis"))
    files = set()
    for module in found:
        target = ROOT / (module.replace(".", "/") + ".py")
        if target.is_file():
            files.add(target.relative_to(ROOT).as_posix())
    return files


def closure(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        todo += sorted(analysis_imports(ROOT / item) - seen)
    return seen


def test_every_stage_lists_exactly_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # `python -m analysis STAGE` runs __main__.py, which imports params and dcase for every
    # stage, then only the stage's own module (imported inside its handler).
    entry = {"analysis/__main__.py", "analysis/params.py", "analysis/dcase.py"}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        stage_name = re.search(r"python -m analysis (\S+)", body["cmd"])[1]
        module = {"check-params": "checks"}.get(stage_name, stage_name)
        expected = closure(entry | {f"analysis/{module}.py"}) - {"analysis/__init__.py"}
        listed = {d for d in body["deps"] if isinstance(d, str) and d.startswith("analysis/")}
        assert listed == expected, (name, sorted(expected - listed), sorted(listed - expected))


def test_stages_that_use_the_mel_geometry_read_the_stored_filter_bank():
    """mel.py reads librosa's filter bank from the first stage's output: a dependency."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    table = re.search(r"--mel-table (\S+)", stages["check_params"]["cmd"])[1]
    assert table in stages["check_params"]["outs"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        code = {d for d in body["deps"] if d.startswith("analysis/")}
        if name != "check_params":
            assert (table in body["deps"]) == ("analysis/mel.py" in code), name


def test_every_stage_waits_for_the_params_check():
    """A bad colormap or mel setting must stop `dvc repro` before any stage does work."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stamp = re.search(r"--stamp (\S+)", stages["check_params"]["cmd"])[1]
    assert stamp in stages["check_params"]["outs"]
    assert set(stages["check_params"]["params"]) == set(SPEC), "it must see every params group"
    for name, stage in stages.items():
        if name != "check_params":
            assert stamp in stage.get("do", stage)["deps"], name
