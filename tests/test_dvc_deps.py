"""dvc.yaml lists exactly the project code each stage runs, so a code change reruns exactly the
stages it can affect. The imports are read from the source (function-level ones included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from analysis.params import SPEC
from analysis.render import REPORT_DIR, TEMPLATE_FILES
from tests.conftest import ROOT


def _module_files(module: str, names: list[str]) -> set[str]:
    """Files that ``from module import names`` (or ``import module``) runs.

    A package runs its ``__init__.py`` (and its parents'); a name imported from a package
    is its submodule, or, for ``analysis.strategies``, the submodule its ``EXPORTS`` names.
    ``strategy_class`` (``analysis.strategies.registry``) may import the class of any kind its
    ``KINDS`` names, so it counts as importing them all.
    """
    parts = module.split(".")
    files = {
        "/".join(parts[:i]) + "/__init__.py"
        for i in range(2, len(parts) + 1)
        if (ROOT / "/".join(parts[:i]) / "__init__.py").is_file()
    }
    base = ROOT / module.replace(".", "/")
    if base.with_suffix(".py").is_file():
        files.add(base.with_suffix(".py").relative_to(ROOT).as_posix())
        if module == "analysis.strategies.registry" and "strategy_class" in names:
            kinds = literal_assignment(base.with_suffix(".py"), "KINDS")
            files |= _module_files("analysis.strategies", sorted(kinds.values()))
    elif base.is_dir():
        exports = package_exports(base / "__init__.py")
        for name in names:
            sub = exports.get(name, name)
            if (base / f"{sub}.py").is_file():
                files |= _module_files(f"{module}.{sub}", [])
    return files


def package_exports(init: Path) -> dict[str, str]:
    """A package's lazy ``EXPORTS`` (public name -> submodule), read from its source."""
    return literal_assignment(init, "EXPORTS")


def literal_assignment(path: Path, name: str) -> dict[str, str]:
    """The literal a module assigns to ``name`` at its top level ({} when it does not)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(getattr(t, "id", None) == name for t in targets):
                return ast.literal_eval(node.value)
    return {}


def analysis_imports(path: Path) -> set[str]:
    """Files of the ``analysis`` package that ``path`` imports, anywhere in the module (for
    ``__main__.py`` only at module level: each stage's handler imports just its own module)."""
    files = set()
    tree = ast.parse(path.read_text())
    nodes = tree.body if path.name == "__main__.py" else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
            files |= _module_files(node.module, [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("analysis"):
                    files |= _module_files(alias.name, [])
    return files - {"analysis/__init__.py", path.relative_to(ROOT).as_posix()}


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
        module = stage_name.replace("-", "_")
        start = f"analysis/{module}.py"  # or a package: analysis/figures/
        if not (ROOT / start).is_file():
            start = f"analysis/{module}/__init__.py"
        expected = closure(entry | {start}) - {"analysis/__init__.py"}
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


def test_the_report_stage_lists_every_template_file():
    """The one list of report template files (analysis.render.TEMPLATE_FILES) is what the
    report stage depends on, what `watch` watches and what the pipeline tests copy."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = {d for d in stages["report"]["deps"] if d.startswith(f"{REPORT_DIR}/")}
    listed -= {f"{REPORT_DIR}/figures"}
    assert listed == {f"{REPORT_DIR}/{name}" for name in TEMPLATE_FILES}
    assert all((ROOT / REPORT_DIR / name).is_file() for name in TEMPLATE_FILES)


def test_stages_that_draw_no_mask_depend_on_no_strategy_module():
    """params.py and checks.py import nothing of analysis/strategies/: an edit to a strategy's
    rules (strategies/options.py) reruns check_params and the stages that draw masks, never
    the audio stages."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("synthesize", "extract", "localize", "power"):
        body = stages[name].get("do", stages[name])
        assert not [d for d in body["deps"] if d.startswith("analysis/strategies/")], name
    for name in ("check_params", "masks"):
        assert "analysis/strategies/options.py" in stages[name]["deps"], name


def stage_modules() -> dict[str, str]:
    """Every stage's module file (``analysis/NAME.py``, or a package's ``__init__.py``), by the
    stage's name in ``python -m analysis NAME``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for stage in stages.values():
        name = re.search(r"python -m analysis (\S+)", stage.get("do", stage)["cmd"])[1]
        module = name.replace("-", "_")
        start = f"analysis/{module}.py"
        out[name] = start if (ROOT / start).is_file() else f"analysis/{module}/__init__.py"
    return out


def test_no_stage_imports_another_stage():
    """A stage's code is its own: what two stages share (audio reading, the records between
    stages) lives in a module that is no stage, so editing one stage never reruns another."""
    modules = stage_modules()
    assert {"extract", "downstream", "report", "figures"} <= set(modules)
    for name, start in modules.items():
        others = {m for other, m in modules.items() if other != name}
        imported = sorted(closure({start}) & others)
        assert not imported, f"stage {name} imports the stage module(s) {imported}"
