"""End to end: the real DVC pipeline on tiny params in a throwaway copy of the project."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from analysis.render import REPORT_DIR, TEMPLATE_FILES, minus, significant
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ALL_STAGES = {
    "check_params",
    "synthesize",
    "extract@fan",
    "extract@valve",
    "localize@fan",
    "localize@valve",
    "power",
    "masks",
    "recommend",
    "downstream",
    "figures",
    "report",
}
PROJECT_FILES = [
    "analysis",
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    *(f"{REPORT_DIR}/{name}" for name in TEMPLATE_FILES),
]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e.pop("CI", None)
    return e


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def repro(cwd: Path, *extra: str) -> set[str]:
    out = sh(cwd, sys.executable, "-m", "dvc", "repro", *extra)
    return set(re.findall(r"Running stage '([^']+)'", out.stdout))


def set_param(cwd: Path, dotted: str, value) -> None:
    path = cwd / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def lock_hashes(cwd: Path, skip_stage: str = "report") -> dict[str, str]:
    lock = yaml.safe_load((cwd / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out["md5"]
        for stage, entry in lock["stages"].items()
        if stage != skip_stage
        for out in entry.get("outs", [])
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


def make_project(work: Path, tiny: bool = True, **overrides) -> Path:
    """A throwaway copy of the project in git, on tiny params unless ``tiny`` is False
    (``overrides``: more params)."""
    for name in PROJECT_FILES:
        src = ROOT / name
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    small = {
        "data.machine_types": ["fan", "valve"],
        "synthetic.ids_per_type": 2,
        "synthetic.train_clips_per_id": 3,
        "synthetic.test_normal_clips_per_id": 4,
        "synthetic.test_anomaly_clips_per_id": 6,
        # Demonstration strength: with 6 anomalous clips per ID, realistic anomalies would leave
        # every row "not enough evidence" and the fit, intervals and figures untested.
        "synthetic.strength": 8.0,
        "masks.n_masks": 100,
        "masks.n_samples": 3,
        "recommend.n_masks_per_candidate": 64,
        "recommend.n_search_candidates": 16,
        "recommend.n_refine_rounds": 1,
        "recommend.n_bootstrap": 20,
        "recommend.min_anomaly_clips": 3,
        "figures.dpi": 60,
        "figures.n_mask_samples": 3,
    }
    for key, value in {**(small if tiny else {}), **overrides}.items():
        set_param(work, key, value)
    sh(work, "git", "init", "-q")
    sh(work, sys.executable, "-m", "dvc", "init", "-q")
    sh(work, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    sh(work, "git", "add", "-A")
    sh(work, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny project")
    return work


@pytest.fixture(scope="module")
def cold(project) -> tuple[Path, set[str], dict]:
    ran = repro(project)
    return project, ran, lock_hashes(project)


def test_cold_run_runs_every_stage(cold):
    _, ran, _ = cold
    assert ran == ALL_STAGES


def test_html_is_self_contained_and_complete(cold):
    project, _, _ = cold
    html = (project / "report/_output/report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html.split("<body", 1)[0])
    assert not re.search(r"""<(img|script|iframe|source)[^>]+src\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"""url\(\s*["']?(https?:)?//""", html) and "@import" not in html
    manifest = yaml.safe_load((project / "report/figures/manifest.json").read_text())["figures"]
    assert html.count('src="data:image/png;base64,') >= len(manifest)
    for entry in manifest:
        assert f'id="{entry["id"]}"' in html, entry["id"]
    text = re.sub(r"<[^>]+>", " ", html.split("<body", 1)[1])
    assert "??" not in text
    assert not re.search(r"@(fig|tbl|sec)-", text)
    assert "SYNTHETIC DATA" in text
    # Each provenance item is a list item of its own (a Jinja block once ate the line break).
    qmd = (project / "report/report.qmd").read_text()
    assert re.search(r"^- Git commit: `\w+`( \(.*tree.*\))?$", qmd, re.M), qmd[-2000:]
    assert re.search(r"^- Render engine: ", qmd, re.M)


def test_pdf_holds_every_machine_type_recommendations_and_commit(cold):
    from pypdf import PdfReader

    project, _, _ = cold
    reader = PdfReader(project / "report/_output/report.pdf")
    text = "\n".join(page.extract_text() for page in reader.pages)
    flat = re.sub(r"\s+", "", text)
    for machine_type in ("fan", "valve"):
        assert machine_type in text
    assert "Recommendations" in text and "SYNTHETICDATA" in flat
    commit = sh(project, "git", "rev-parse", "HEAD").stdout.strip()
    assert commit[:12] in flat
    assert "??" not in text and not re.search(r"@(fig|tbl|sec)-", text)
    assert reader.pages[0].mediabox.width == pytest.approx(595.3, abs=1)  # A4
    assert (project / "report/_output/report.pdf").stat().st_size < 15e6


def test_the_answer_table_gives_every_type_a_verdict_and_the_noise_level(cold):
    from analysis.artifacts import Verdict, row_verdict
    from analysis.report_text import verdict_label

    project, _, _ = cold
    recs = yaml.safe_load((project / "build/recommendations.json").read_text())["rows"]
    qmd = (project / "report/report.qmd").read_text()
    table = qmd[qmd.index("| machine type | verdict |") : qmd.index("{#tbl-answer}")]
    for r in (r for r in recs if r["machine_id"] == "all"):
        v = row_verdict(r)
        # never "keep" a setting the user does not run; a switch names a candidate
        assert v.kind is not Verdict.KEEP or verdict_label(r) == "keep current", r
        assert v.kind is not Verdict.SWITCH or v.candidate not in (None, "current"), r
        line = next(x for x in table.splitlines() if f"[{r['machine_type']}]" in x)
        assert f"**{verdict_label(r)}**" in line.replace("\\", "")
        assert line.count("|") == 8  # seven cells, whatever the verdict
        if r["status"] == "ok":
            noise = r["score_noise_level"]
            assert noise is not None and minus(significant(noise)) in line  # U+2212
        if v.ci_low is None:  # no test ran: the table says so, and claims nothing
            assert "no test" in line and "not distinguishable" not in line


def test_two_queued_experiments_are_compared_by_dvc_exp_show(cold, tmp_path):
    """Per-type verdicts and scores are DVC metrics tracked by git: `dvc exp show` lists them
    for the baseline and for every experiment, and `dvc metrics diff` loads them at HEAD."""
    import json

    project = tmp_path / "copy"
    shutil.copytree(cold[0], project, symlinks=True)
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    for name, change in (("more-boot", "recommend.n_bootstrap=30"), ("seed-1", "recommend.seed=1")):
        sh(project, sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name, "-S", change)
    sh(project, sys.executable, "-m", "dvc", "exp", "run", "--run-all", "-j", "1")
    shown = json.loads(sh(project, sys.executable, "-m", "dvc", "exp", "show", "--json").stdout)
    runs = {}
    for entry in shown:
        for exp in [entry, *(e for e in entry.get("experiments") or [])]:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                metrics = data.get("metrics", {}).get("build/metrics.json", {}).get("data")
                runs[rev.get("name") or data.get("rev")] = metrics
    found = {name: m for name, m in runs.items() if m}
    assert {"more-boot", "seed-1"} <= set(found), runs.keys()
    for metrics in found.values():
        assert set(metrics) == {"fan", "valve"}
        assert all("verdict" in v for v in metrics.values())
    diff = sh(project, sys.executable, "-m", "dvc", "metrics", "diff", "--all")
    assert "failed to load" not in diff.stdout + diff.stderr


def test_the_downstream_check_runs_on_a_tiny_set_and_the_report_answers(cold, tmp_path):
    """Off in the default run (the report says how to turn it on); on, a few-step budget
    trains every (type, setting, seed), and the report shows its section and page-1 column."""
    import json

    project = tmp_path / "copy"
    shutil.copytree(cold[0], project, symlinks=True)
    html = (project / "report/_output/report.html").read_text()
    assert "dvc exp run -S downstream.enabled=true" in html
    assert json.loads((project / "build/downstream.json").read_text())["enabled"] is False
    for key, value in {
        "downstream.enabled": True,
        "downstream.seeds": 2,
        "downstream.steps": 5,
        "downstream.baseline_epochs": 2,
        "downstream.n_bootstrap": 20,
        "downstream.synthetic_train_clips_per_id": 4,  # the check's own, beside the set's 3
    }.items():
        set_param(project, key, value)
    ran = repro(project)
    assert ran == {"check_params", "downstream", "figures", "report"}
    record = json.loads((project / "build/downstream.json").read_text())
    assert record["enabled"] and set(record["types"]) == {"fan", "valve"}
    assert record["train_clips_written"] and not (project / "build/downstream_train").exists()
    recs = yaml.safe_load((project / "build/recommendations.json").read_text())["rows"]
    presets = yaml.safe_load((project / "params.yaml").read_text())["downstream"]["presets"]
    path = {"path_25", "path_50", "path_75", "fitted"}  # downstream.path_points 5, ends included
    for t, summary in record["types"].items():
        row = next(r for r in recs if r["machine_type"] == t and r["machine_id"] == "all")
        expected = set(presets) - {"fitted"} | (path if row["status"] == "ok" else set())
        assert set(summary["settings"]) == expected
        assert set(summary["references"]) == {"baseline_ae", "zscore"}
        for v in [*summary["settings"].values(), *summary["references"].values()]:
            assert v["auc_ci"][0] <= v["auc"] <= v["auc_ci"][1]
        assert isinstance(summary["valid"], bool) and summary["n_train_clips"] == 2 * 4
        assert set(summary["train_clips_per_id"].values()) == {4}
        assert summary["calibration"]["sentence"].startswith("the proxy ")
        if not summary["valid"]:  # the reason alone: nothing about a ranking it does not use
            assert summary["sentence"] == f"not valid for this type: {summary['invalid_reason']}"
        if row["status"] == "ok":  # the held-out scores are recommend's, to the digit
            assert summary["settings"]["current"]["mask_score"] == row["score_current"]
            assert summary["settings"]["fitted"]["mask_score"] == row["score_recommended"]
            assert (
                summary["rank_correlation"]["shape"]
                and "mask_score_ci" in (summary["settings"]["path_50"])
            )
    rows = (project / "build/downstream.csv").read_text().splitlines()
    n_ids = 2  # tiny project: two IDs per type
    n_settings = sum(len(v["settings"]) for v in record["types"].values())
    n_references = 2 * len(record["types"])
    # header + per setting, seed and ID + per reference detector and ID
    assert len(rows) == 1 + n_settings * 2 * n_ids + n_references * n_ids
    assert (
        "reference: DCASE 2020 baseline autoencoder" in (project / "report/report.qmd").read_text()
    )
    qmd = (project / "report/report.qmd").read_text()
    assert "{#tbl-downstream}" in qmd and "proxy detector (@sec-downstream)" in qmd
    from analysis.render import md_escape

    first_row = next(x for x in qmd.splitlines() if x.startswith("| [fan]"))
    fan = record["types"]["fan"]
    shape = fan.get("rank_correlation", {}).get("shape")
    if fan["valid"] and shape:  # page 1 names the trend short; the full answer is in its section
        n_ranked = len(fan["rank_correlation"]["settings"])
        trend = f"AUC vs closeness, {n_ranked} settings: {shape}"
        assert first_row.rstrip().endswith(f"; {md_escape(trend)} |")
    if not fan["valid"]:  # page 1 does not use an invalid check
        assert md_escape("closeness alone: check not valid (") in first_row
        assert "AUC vs closeness" not in first_row
    assert md_escape(fan["sentence"]) not in first_row  # page 1 stays one row per type
    answer_table = qmd[: qmd.index("{#tbl-downstream-answer}")].split("\n\n")[-2]
    answer_row = next(x for x in answer_table.splitlines() if x.startswith("| fan | "))
    calibration = fan["calibration"]
    assert answer_row.startswith(f"| fan | {'yes' if fan['valid'] else '**no**'} | ")
    low = f"{calibration['ci'][0]:.3f}".replace("-", "\u2212")  # the report's minus sign
    assert f"{calibration['difference']:.3f}".replace("-", "\u2212") + " \\[" + low in answer_row
    assert answer_row.rstrip().endswith(f"| {md_escape(fan['sentence'])} |")
    figure_ids = {
        f["id"]
        for f in json.loads((project / "report/figures/manifest.json").read_text())["figures"]
    }
    assert "fig-downstream" in figure_ids
    if any("shape" in v.get("rank_correlation", {}) for v in record["types"].values()):
        assert "fig-dose-response" in figure_ids
    assert "written for this check" in qmd and "{#tbl-downstream-answer}" in qmd


@pytest.fixture(scope="module")
def nothing_found(tmp_path_factory) -> Path:
    """Anomalies 1000 times weaker than realistic: no type can have evidence."""
    work = make_project(tmp_path_factory.mktemp("nothing"), **{"synthetic.strength": 0.001})
    repro(work)
    return work


def test_a_run_that_finds_nothing_renders_a_report_that_says_so(nothing_found):
    from pypdf import PdfReader

    recs = yaml.safe_load((nothing_found / "build/recommendations.json").read_text())["rows"]
    assert all(r["status"].startswith("not enough evidence") for r in recs)
    first_page = PdfReader(nothing_found / "report/_output/report.pdf").pages[0].extract_text()
    flat = re.sub(r"\s+", " ", first_page)
    assert "Nothing to recommend in this run" in flat, flat[:2000]
    # 1000 times weaker than calibrated: the banner must not claim DCASE-like difficulty
    assert "not at the calibrated strength: synthetic.strength is 0.001" in flat
    assert "Its anomalies are as hard as the real ones" not in flat
    assert "not enough evidence" in flat
    html = (nothing_found / "report/_output/report.html").read_text()
    assert "Nothing to recommend in this run" in html
    manifest = yaml.safe_load((nothing_found / "report/figures/manifest.json").read_text())
    assert "fig-score-heatmap" not in {f["id"] for f in manifest["figures"]}


def test_a_failed_render_keeps_the_previous_report(cold):
    project, _, _ = cold
    html = project / "report/_output/report.html"
    before = html.read_bytes()
    template = project / "report/report.qmd.j2"
    original = template.read_text()
    template.write_text(original + "\n{% if %}\n")  # a template error: the stage fails
    try:
        result = sh(project, sys.executable, "-m", "dvc", "repro", check=False)
        assert result.returncode != 0
        assert html.read_bytes() == before
        assert (project / "report/_output/report.pdf").is_file()
    finally:
        template.write_text(original)
    repro(project)


def test_noop_repro_runs_nothing(cold):
    project, _, _ = cold
    assert repro(project) == set()


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("report.title", "Another title", {"report"}),
        ("figures.dpi", 61, {"figures", "report"}),
        # downstream reads the recommendations and masks (when off: a second, same output) and
        # the recommend params (its dose-response resamples the held-out half as recommend does).
        # The tiny set's rows are too small for a paired interval (fewer than 5 independent
        # held-out regions), so no number depends on the bootstrap count: the recommendations
        # keep their bytes and the figures do not rerun.
        ("recommend.n_bootstrap", 21, {"recommend", "downstream", "report"}),
        ("masks.n_masks", 101, {"masks", "recommend", "downstream", "figures", "report"}),
        (
            "localization.clip_false_region_rate",
            0.04,
            # downstream reads the localization too (the held-out regions of its dose-response)
            {
                "localize@fan",
                "localize@valve",
                "power",
                "recommend",
                "downstream",
                "figures",
                "report",
            },
        ),
        (
            "features.fmin",
            20.0,
            {
                "masks",  # band widths in Hz depend on the mel scale
                "extract@fan",
                "extract@valve",
                "localize@fan",
                "localize@valve",
                "power",
                "recommend",
                "downstream",
                "figures",
                "report",
            },
        ),
        ("synthetic.seed", 7, ALL_STAGES - {"masks"}),
    ],
)
def test_a_param_change_reruns_exactly_what_depends_on_it(cold, key, value, expected):
    """Any params change reruns the (cheap) check stage; its outputs stay the same unless a
    mel setting changed, so it reruns nothing by itself."""
    project, _, _ = cold
    set_param(project, key, value)
    assert repro(project) == expected | {"check_params"}


def test_a_bad_colormap_stops_dvc_repro_before_any_stage_works(cold):
    project, _, _ = cold
    original = yaml.safe_load((project / "params.yaml").read_text())["figures"]["cmap_deviation"]
    set_param(project, "figures.cmap_deviation", "viridiss")
    try:
        result = sh(project, sys.executable, "-m", "dvc", "repro", check=False)
        ran = re.findall(r"Running stage '([^']+)'", result.stdout)
        assert result.returncode != 0 and ran == ["check_params"], result.stdout[-2000:]
        assert "figures.cmap_deviation: 'viridiss' is not a matplotlib colormap" in (
            result.stdout + result.stderr
        )
    finally:
        set_param(project, "figures.cmap_deviation", original)


def test_template_change_reruns_only_the_report(cold):
    project, _, _ = cold
    template = project / "report/report.qmd.j2"
    template.write_text(template.read_text() + "\nAn added closing line.\n")
    assert repro(project) == {"report"}


@pytest.mark.parametrize(
    "module, expected",
    [
        # Only the stages that draw masks run the Perlin code (the band engine imports it for
        # perlin_prob > 0); the params check, the data and the localization do not.
        (
            "analysis/strategies/perlin.py",
            {"masks", "recommend", "downstream", "figures", "report"},
        ),
        # The clip-level method is run by localize and power only; their outputs are the same
        # bytes after a comment, so nothing downstream reruns.
        ("analysis/localization/clip_level.py", {"localize@fan", "localize@valve", "power"}),
        # The score is run by recommend; figures draws its coordinates (SCORE_COORDINATES, the
        # one list of what the score compares) and the report prints its constants.
        ("analysis/scoring.py", {"recommend", "downstream", "figures", "report"}),
    ],
)
def test_a_method_change_reruns_only_the_stages_that_run_it(cold, module, expected):
    project, _, _ = cold
    path = project / module
    original = path.read_text()
    path.write_text(original + "\n# an edit that changes no result\n")
    try:
        assert repro(project) == expected
    finally:
        path.write_text(original)
        repro(project)


def test_a_users_strategy_from_another_folder_is_scored_by_dvc_repro(cold, tmp_path):
    """What a user does: point a preset at their training repo's class, run dvc repro."""
    project, _, _ = cold
    repo = tmp_path / "their-training-repo"
    (repo / "dsr").mkdir(parents=True)
    (repo / "dsr" / "__init__.py").write_text("")
    (repo / "dsr" / "masking.py").write_text(
        "import torch\n\n"
        "class StripeStrategy:\n"
        "    def __init__(self, spectrogram_shape, q_shape, n_mels, T, rows=5):\n"
        "        self.n_mels, self.T, self.rows = n_mels, T, rows\n\n"
        "    def __call__(self, batch_size, device):\n"
        "        out = torch.zeros(batch_size, 1, self.n_mels, self.T)\n"
        "        for b in range(batch_size):\n"
        "            low = int(torch.randint(0, self.n_mels - self.rows + 1, (1,)))\n"
        "            out[b, 0, low : low + self.rows, :] = 1.0\n"
        "        return out.to(device)\n"
    )
    set_param(
        project,
        "masks.presets.their_stripes",
        {
            "kind": "python",
            "target": "dsr.masking:StripeStrategy",
            "path": str(repo),
            "kwargs": {"rows": 5},
        },
    )
    # downstream reads build/masks (its presets), so it reruns too (off: a second)
    expected = {"check_params", "masks", "recommend", "downstream", "figures", "report"}
    assert repro(project) == expected
    rows = [
        line.split(",")
        for line in (project / "build/masks/features.csv").read_text().splitlines()[1:]
    ]
    theirs = [r for r in rows if r[0] == "their_stripes"]
    n_masks = yaml.safe_load((project / "params.yaml").read_text())["masks"]["n_masks"]
    assert len(theirs) == n_masks
    recs = yaml.safe_load((project / "build/recommendations.json").read_text())
    ok = [r for r in recs["rows"] if r.get("status") == "ok"]
    assert ok and all(r["score_their_stripes"] >= 0 for r in ok)
    html = (project / "report/_output/report.html").read_text()
    assert "their_stripes" in html and "dsr.masking:StripeStrategy" in html


def test_special_characters_in_file_names_survive_both_outputs(cold):
    from pypdf import PdfReader

    project, _, _ = cold
    skipped = project / "build/features/fan/skipped.csv"
    name = "fan/test/odd <b>*name*</b> _x_ [1] `#2` | $3.wav"
    skipped.write_text(skipped.read_text() + f'"{name}",name does not parse\n')
    sh(project, sys.executable, "-m", "analysis", "report")
    html = (project / "report/_output/report.html").read_text()
    assert "<b>*name*</b>" not in html  # not injected as markup
    assert "&lt;b&gt;*name*&lt;/b&gt;" in html
    text = re.sub(
        r"\s+",
        "",
        "".join(p.extract_text() for p in PdfReader(project / "report/_output/report.pdf").pages),
    )
    assert re.sub(r"\s+", "", name) in text


def test_clean_rerun_gives_identical_hashes(cold):
    project, _, reference = cold
    for key, value in [("report.title", "Do synthetic anomaly masks look like real anomalies?")]:
        set_param(project, key, value)
    original = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    for group, key in [
        ("figures", "dpi"),
        ("recommend", "n_bootstrap"),
        ("masks", "n_masks"),
        ("localization", "clip_false_region_rate"),
        ("features", "fmin"),
        ("synthetic", "seed"),
    ]:
        params[group][key] = {"dpi": 60, "n_bootstrap": 20, "n_masks": 100}.get(
            key, original[group][key]
        )
    params["masks"]["presets"] = original["masks"]["presets"]  # drop a user's preset
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro(project, "--force")
    assert lock_hashes(project) == reference


def test_interrupted_run_completes_correctly(cold):
    project, _, reference = cold
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "Running stage 'extract@" in line or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    repro(project)
    assert lock_hashes(project) == reference
    assert repro(project) == set()


TRACKED_FOLDERS = ("build", "data", "report")


def temp_litter(project: Path) -> list[Path]:
    """Temp files or folders of our atomic writes anywhere under the DVC-tracked folders."""
    return sorted(
        p
        for folder in TRACKED_FOLDERS
        if (project / folder).exists()
        for p in (project / folder).rglob(".*")
        if p.name.endswith((".tmp", ".old"))
    )


def any_temp_exists(project: Path) -> bool:
    """Whether one of our temp files exists now. DVC may delete a folder while it is being
    scanned (it removes an uncached output before rerunning its stage): then say no and let
    the caller poll again."""
    for folder in (*TRACKED_FOLDERS, ".tmp"):
        root = project / folder
        try:
            if root.exists() and any(
                p.name.endswith((".tmp", ".old")) for p in root.rglob(".*") if p.exists()
            ):
                return True
        except FileNotFoundError:
            continue
    return False


def kill_stage_while_writing(project: Path, stage: str) -> bool:
    """Run one stage under DVC and SIGKILL it as soon as one of its temp files exists.

    Returns whether the kill landed while a temp file existed (a stage can finish
    its short writes between two polls).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any_temp_exists(project):
                os.killpg(proc.pid, signal.SIGKILL)
                return True
            time.sleep(0.005)
        return False
    finally:  # whatever happens, no stage keeps running into the next test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkill_at_any_stage_leaves_no_temp_file_in_dvc_paths(cold):
    """SIGKILL mid-write at every stage: no temp file inside build/, data/ or report/,
    and the rerun gives the clean run's outputs with `dvc status` clean."""
    project, _, reference = cold
    stages = ["synthesize", "extract@fan", "localize@fan", "power", "masks", "recommend"]
    stages += ["figures", "report"]
    landed = {}
    for stage in stages:
        landed[stage] = kill_stage_while_writing(project, stage)
        assert temp_litter(project) == [], f"after SIGKILL in {stage}"
        # DVC reruns the stage if the kill cost an output; the old output may also still be
        # whole (the rename into place had not happened yet), and then nothing needs to run.
        repro(project)
        assert temp_litter(project) == []
        status = sh(project, sys.executable, "-m", "dvc", "status")
        assert "up to date" in status.stdout.lower(), status.stdout
        assert lock_hashes(project) == reference, f"after SIGKILL in {stage} and a rerun"
    # Stages that write a whole folder hold a temp folder for seconds: those kills must land.
    assert all(landed[s] for s in ("synthesize", "extract@fan", "masks", "figures")), landed
    # The next stage that runs removes the dead stages' scratch folders.
    sh(project, sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "check_params")
    assert not (project / ".tmp").exists()


def start_watch(project: Path) -> subprocess.Popen:
    """Start ``analysis watch`` the way a non-interactive shell's ``cmd &`` would:
    with SIGINT ignored, which the watch must undo to honour Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, "-m", "analysis", "watch", "--debounce", "0.5", "--poll", "0.1"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def test_watch_stops_cleanly_on_sigterm(cold):
    project, _, _ = cold
    proc = start_watch(project)
    assert "watching" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert "watch: stopped" in rest and proc.returncode == 0


def test_watch_reruns_after_a_save_and_stops_on_ctrl_c(cold):
    project, _, _ = cold
    proc = start_watch(project)
    lines = [proc.stdout.readline()]
    assert "watching" in lines[0]
    set_param(project, "report.title", "Watched title")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("watch: report") or not line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert "watch: reran: check_params, report\n" in output, output
    assert "report/_output/report.html" in output
    assert "watch: stopped" in output and proc.returncode == 0


def headless_chromium(profile: Path, *extra: str, budget_ms: int = 10000) -> list[str]:
    """The command of a headless Chromium that fetches nothing and runs a page's scripts for
    ``budget_ms`` of virtual time (``extra``: more flags); skips the test without Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (Debian package chromium)")
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
    ]


@pytest.mark.browser
def test_real_browser_decodes_every_image(cold, tmp_path):
    project, _, _ = cold
    probe = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
      const out = document.createElement('pre'); out.id = 'probe';
      out.textContent = `images=${imgs.length} undecoded=${bad}`; document.body.appendChild(out);
    });</script>"""
    page = tmp_path / "report.html"
    page.write_text(
        (project / "report/_output/report.html").read_text().replace("</body>", probe + "</body>")
    )
    chromium = headless_chromium(tmp_path / "profile")
    dom = subprocess.run(
        [*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r"images=(\d+) undecoded=(\d+)", dom)
    assert found, dom[-2000:]
    assert int(found[1]) >= 10 and int(found[2]) == 0
    shot = ROOT / "report" / "_output" / "screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*chromium, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10000


SELFTEST_HEAD = """<script>window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); __consoleError(...a); };
</script>"""
SELFTEST_BODY = """<script>window.addEventListener('load', () => setTimeout(() => {
  const r = {width: innerWidth};
  const toc = document.getElementById('TOC');
  const list = toc.querySelector(':scope > ul');
  const shown = (el) => el && getComputedStyle(el).display !== 'none' && el.getBoundingClientRect().width > 50;
  r.toc_list_shown = shown(list);
  window.scrollTo(0, document.body.scrollHeight / 2);
  const box = list.getBoundingClientRect();
  r.toc_in_view_after_scroll = shown(list) && box.top < innerHeight && box.bottom > 0;
  r.toc_toggle_shown = shown(document.getElementById('toc-toggle'));
  window.scrollTo(0, 0);
  const tabset = document.querySelector('[data-tabset]');
  const buttons = [...tabset.querySelectorAll(':scope > .tab-buttons > .tab-button')];
  const panels = [...tabset.querySelectorAll(':scope > .tab-panel')];
  const visible = (p) => [...p.querySelectorAll('figure img')].filter((i) => i.offsetParent !== null).length;
  r.tabs = buttons.map((b) => b.textContent);
  r.before = panels.map(visible);
  buttons[1].click();
  r.after = panels.map(visible);
  const img = panels[1].querySelector('figure img');
  img.click();
  const overlay = document.getElementById('zoom-overlay');
  const big = overlay.querySelector('img');
  r.zoom_open = overlay.classList.contains('open') && getComputedStyle(overlay).display !== 'none';
  r.zoom_same_image = big.src === img.src;
  r.zoom_larger = big.getBoundingClientRect().width > img.getBoundingClientRect().width;
  overlay.click();
  r.zoom_closed = getComputedStyle(overlay).display === 'none';
  const link = document.querySelector('.table-tools a[download]');
  link.click();
  r.csv = decodeURIComponent(link.href.replace(/^data:text[/]csv;charset=utf-8,/, '')).split('\\n')[0];
  r.n_csv_links = document.querySelectorAll('.table-tools a[download]').length;
  r.n_tables = document.querySelectorAll('table').length;
  r.requests = performance.getEntriesByType('resource').map((e) => e.name).filter((n) => !n.startsWith('data:'));
  r.errors = window.__errors;
  const out = document.createElement('pre');
  out.id = 'selftest';
  out.textContent = 'SELFTEST' + JSON.stringify(r) + 'END';
  document.body.appendChild(out);
}, 300));</script>"""


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 420])
def test_report_navigation_in_a_real_browser(cold, tmp_path, width):
    """The HTML as a reader uses it, in headless Chromium after its scripts ran: the table of
    contents beside the text on a wide screen (a toggle on a narrow one), machine-type tabs,
    figures that open enlarged, tables exported as CSV, no request leaving the file, no error."""
    import json

    chromium = headless_chromium(
        tmp_path / "profile", "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},1000"
    )
    project, _, _ = cold
    html = (project / "report/_output/report.html").read_text()
    html = html.replace("<head>", "<head>" + SELFTEST_HEAD, 1).replace(
        "</body>", SELFTEST_BODY + "</body>"
    )
    page = tmp_path / "report.html"
    page.write_text(html)
    dom = subprocess.run(
        [*chromium, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r'<pre id="selftest">SELFTEST(.*?)END</pre>', dom, re.S)
    assert found, dom[-2000:]
    r = json.loads(
        found[1]
        .replace("&quot;", '"')
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
    )
    # Headless Chromium does not go below 500 px; 420 asks for its narrowest.
    assert r["width"] == width if width >= 500 else r["width"] <= 500
    if width >= 1200:
        assert r["toc_list_shown"] and r["toc_in_view_after_scroll"] and not r["toc_toggle_shown"]
    else:
        assert r["toc_toggle_shown"] and not r["toc_list_shown"]
    assert r["tabs"][:2] == ["fan", "valve"]
    assert r["before"][0] > 0 and r["before"][1] == 0  # fan's figures shown, valve's hidden
    assert r["after"][0] == 0 and r["after"][1] > 0  # after the click: the other way round
    assert r["zoom_open"] and r["zoom_same_image"] and r["zoom_larger"] and r["zoom_closed"]
    assert r["csv"].startswith("machine type,") and r["n_csv_links"] == r["n_tables"]
    assert r["requests"] == [] and r["errors"] == []


def test_quarto_engine_where_installed(cold):
    if not shutil.which("quarto"):
        pytest.skip("the quarto CLI is not on PATH (the pandoc + Typst engine is tested above)")
    project, _, _ = cold
    set_param(project, "report.engine", "quarto")
    try:
        sh(project, sys.executable, "-m", "analysis", "report")
        html = (project / "report/_output/report.html").read_text()
        assert "quarto" in html.lower() and "??" not in re.sub(r"<[^>]+>", " ", html)
        assert (project / "report/_output/report.pdf").stat().st_size > 10000
    finally:
        set_param(project, "report.engine", "auto")
