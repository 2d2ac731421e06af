"""Stage ``report``: the Quarto document, rendered to HTML (to read) and PDF (to share).

The Jinja2 template ``report/report.qmd.j2`` and the stage outputs make
``report/report.qmd``. The Quarto CLI renders it where it is installed;
otherwise pandoc (from the ``pypandoc-binary`` wheel) makes a self-contained
HTML file and a Typst file that the ``typst`` wheel compiles to PDF. The Lua
filter ``report/crossref.lua`` resolves ``@fig-``/``@tbl-`` references there.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from subprocess import PIPE
from typing import Any

import jinja2
import numpy as np
import yaml

from analysis.io import atomic_path, log, read_csv, read_json, write_text
from analysis.masks import read_masks_meta
from analysis.mel import MelGeometry
from analysis.recommend import FIT_KEYS, MIN_HOLDOUT_FOR_CI, PARSIMONY

REPORT_DIR = Path("report")
TEMPLATE = "report.qmd.j2"
PACKAGES = (
    "numpy",
    "scipy",
    "torch",
    "librosa",
    "soundfile",
    "matplotlib",
    "seaborn",
    "jinja2",
    "dvc",
    "pypandoc-binary",
    "typst",
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&$@~^\"'=:;])")


def md_escape(value: Any) -> str:
    """Text safe inside Markdown and HTML: every ASCII punctuation mark backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; blank for missing values."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    try:
        f = float(value)
    except (TypeError, ValueError):
        return md_escape(value)
    if not np.isfinite(f):
        return "–"
    return f"{f:.{digits}f}"


def git_state(cwd: Path = Path(".")) -> dict[str, Any]:
    """The commit the report was made from and whether tracked files had changes."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {
        "commit": commit or "unknown (not a git checkout)",
        "dirty": dirty,
        "commit_date": run("log", "-1", "--format=%cs") if commit else "",
    }


def report_date(git: dict[str, Any]) -> str:
    """The date printed on the report: ``SOURCE_DATE_EPOCH`` when set, else the commit's date,
    else today. Never the wall clock where a reproducible date exists, so the same inputs give
    the same report."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), _dt.UTC).date().isoformat()
    return git.get("commit_date") or _dt.date.today().isoformat()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def pandoc_path() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


def choose_engine(setting: str) -> str:
    """``quarto`` when asked for or (``auto``) when on PATH; otherwise ``pandoc``."""
    if setting == "quarto" and not shutil.which("quarto"):
        raise RuntimeError(
            "report.engine is 'quarto' but the quarto CLI is not on PATH (use auto or pandoc)"
        )
    if setting == "quarto" or (setting == "auto" and shutil.which("quarto")):
        return "quarto"
    return "pandoc"


def engine_version(engine: str) -> str:
    if engine == "quarto":
        return (
            "quarto "
            + subprocess.run(["quarto", "--version"], capture_output=True, text=True).stdout.strip()
        )
    pandoc = subprocess.run(
        [pandoc_path(), "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    return f"{pandoc} + typst {importlib.metadata.version('typst')} (pandoc-typst fallback)"


def _span(lo: Any, hi: Any) -> str:
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def describe_fit(row: dict[str, Any], T: int) -> str:
    """Fitted ranges in words."""
    bands = _span(row["min_bands"], row["max_bands"])
    plural = "" if row["max_bands"] == 1 else "s"
    segments = (
        f"{_span(row['min_segments'], row['max_segments'])} segment{'' if row['max_segments'] == 1 else 's'} "
        f"of {_span(row['min_seg_len'], row['max_seg_len'])} frames"
        + (" (up to the whole clip)" if row["max_seg_len"] >= 0.9 * T else "")
    )
    full = row["full_time_prob"]
    if full >= 0.995:
        time = "one segment over 85–100 % of the clip"
    elif full > 0:
        time = f"one segment over 85–100 % of the clip in {full:.0%} of masks, else {segments}"
    else:
        time = segments
    return (
        f"{bands} band{plural} of {row['min_band_fraction']:.0%}–{row['max_band_fraction']:.0%} "
        f"of the mel bins within {row['min_band_position']:.0%}–{row['max_band_position']:.0%} "
        f"of the axis; {time}"
    )


def strategy_call(row: dict[str, Any], geometry: MelGeometry, q_factor: int | None = None) -> str:
    """A ready-to-paste constructor call with the fitted values, in the training code's convention.

    ``q_factor`` None gives spectrogram-size masks (``q_shape=None``), which the
    model then projects onto its latent grids itself.
    """
    n_mels, T = geometry.spectrogram_shape
    if q_factor is None:
        q_text = "None"
    else:
        q = geometry.q_shape(q_factor)
        q_text = f"({q[0]}, {q[1]})"
    args = [f"({n_mels}, {T})", q_text, str(n_mels), str(T)]
    args += [f"{k}={row[k]!r}" for k in FIT_KEYS]
    return (
        "from analysis.strategies import AudioSpecificStrategy\n\n"
        "strategy = AudioSpecificStrategy(\n    " + ",\n    ".join(args) + ",\n)"
    )


def type_pattern(loc: dict[str, Any]) -> str:
    """A machine type's pattern from the evidence it has: its clip-level regions where they
    stand out in at least half of the anomalous clips, else its IDs' pooled regions."""
    if not loc["n_anomaly"]:
        return "no anomalous clips"
    if loc["n_anomaly"] and loc["n_regions_found"] >= 0.5 * loc["n_anomaly"]:
        return loc["pattern"]
    pooled = [s["id_level_pattern"] for s in loc["ids"].values() if s.get("id_level_pattern")]
    pooled = [p for p in pooled if p != "none found"]
    if not pooled:
        return "none found"
    return max(sorted(set(pooled)), key=pooled.count) + " (pooled over clips)"


def comparison_sentence(row: dict[str, Any]) -> str:
    """What one row's paired interval supports, in words (evidence and held-out count included)."""
    t, best, n = row["machine_type"], row["best_preset"], row["n_independent_holdout"]
    head = f"{t} ({row['evidence']} evidence, {n} independent held-out regions): "
    if not row.get("intervals"):
        return (
            head + f"too few for an interval (fewer than {MIN_HOLDOUT_FOR_CI}); the fitted "
            f"setting and '{best}' are not distinguishable."
        )
    diff = (
        f"{row['diff_fitted_vs_best']:+.3f} [{row['diff_fitted_vs_best_ci_low']:+.3f}, "
        f"{row['diff_fitted_vs_best_ci_high']:+.3f}]"
    )
    verdict = row["diff_fitted_vs_best_verdict"]
    if verdict == "closer":
        claim = f"the fitted setting ({describe_fit(row, 320)}) is closer than '{best}', the closest preset"
    elif verdict == "farther":
        claim = f"'{best}', the closest preset, is closer than the fitted setting"
    else:
        claim = f"the fitted setting and '{best}', the closest preset, are not distinguishable with {n} held-out regions"
    return head + f"{claim} (score difference fitted − {best} {diff})."


def findings(context: dict[str, Any]) -> list[str]:
    """The first page's summary, written from the numbers."""
    out = []
    types = context["machine_types"]
    patterns = {t: type_pattern(context["localization"][t]) for t in types}
    groups: dict[str, list[str]] = {}
    for t, p in patterns.items():
        groups.setdefault(p.split(",")[0], []).append(t)
    words = {
        "stationary": "stationary band anomalies (lasting the whole clip)",
        "transient": "short transient anomalies",
        "windowed": "anomalies confined to a time window",
        "none found": "no anomaly region standing out",
        "no anomalous clips": "no labelled anomalous test clips, so nothing to localize",
    }
    for kind, members in groups.items():
        out.append(f"{', '.join(members)}: {words.get(kind, kind)}.")
    ok = [r for r in context["type_rows"] if r.get("status") == "ok"]
    if ok:
        closer = [r["machine_type"] for r in ok if r["diff_fitted_vs_best_verdict"] == "closer"]
        out.append(
            f"The fitted setting is closer to the real regions than the closest preset (chosen on "
            f"the fit half), with a {context['ci_level']:.0%} paired interval of the held-out score "
            f"difference excluding 0, for {len(closer)} of {len(ok)} machine types"
            + (f" ({', '.join(closer)})" if closer else "")
            + "; for the others the two are not distinguishable with their held-out clips."
        )
        for r in ok:
            out.append(comparison_sentence(r))
    lacking = [r for r in context["type_rows"] if r.get("status") != "ok"]
    for r in lacking:
        out.append(f"{r['machine_type']}: {r['status']}.")
    worst = max(context["fidelity"], key=lambda r: float(r["vanished_share"]), default=None)
    if worst and float(worst["vanished_share"]) > 0:
        out.append(
            f"Resizing: up to {float(worst['vanished_share']):.1%} of '{worst['preset']}' masks vanish on the "
            f"{worst['grid']} grid with {worst['method']} resize; the any-cell projection never loses a masked cell."
        )
    return out


def data_found(sources: dict[str, dict[str, Any]]) -> str:
    """What the extract stage found under the data root, in one line (for the data banner)."""
    ids = sum(len(s["per_id"]) for s in sources.values())
    normal = sum(c["test_normal"] for s in sources.values() for c in s["per_id"].values())
    anomaly = sum(c["test_anomaly"] for s in sources.values() for c in s["per_id"].values())
    train = sum(s["n_train_used"] for s in sources.values())
    skipped = sum(s["n_skipped"] for s in sources.values())
    return (
        f"{len(sources)} machine type{'s' if len(sources) != 1 else ''} "
        f"({', '.join(sources)}), {ids} machine ID{'s' if ids != 1 else ''}, {train} train clips, "
        f"{normal} normal and {anomaly} anomalous test clips used"
        + (f", {skipped} file{'s' if skipped != 1 else ''} skipped" if skipped else "")
    )


def build_context(
    params: dict[str, Any], params_path: str | Path, build_dir: Path, figures_dir: Path, engine: str
) -> dict[str, Any]:
    geometry = MelGeometry.from_params(params)
    machine_types = params["data"]["machine_types"]
    sources = {t: read_json(build_dir / "features" / t / "source.json") for t in machine_types}
    skipped = [
        {"machine_type": t, **row}
        for t in machine_types
        for row in read_csv(build_dir / "features" / t / "skipped.csv")
    ]
    recs = read_json(build_dir / "recommendations.json")
    git = git_state()
    presets_meta = read_masks_meta(build_dir / "masks")
    manifest = read_json(figures_dir / "manifest.json")["figures"]
    figures_by_section: dict[str, list[dict]] = {}
    for entry in manifest:
        figures_by_section.setdefault(entry["section"], []).append(entry)
    rows = recs["rows"]
    context = {
        "power": read_json(build_dir / "power.json"),
        "title": params["report"]["title"],
        "author": params["report"]["author"],
        "date": report_date(git),
        "machine_types": machine_types,
        "synthetic": all(s["synthetic"] for s in sources.values()),
        "any_synthetic": any(s["synthetic"] for s in sources.values()),
        "data_root": params["data"]["root"],
        "data_found": data_found(sources),
        "sources": sources,
        "skipped": skipped,
        "localization": {
            t: read_json(build_dir / "localization" / f"{t}.json") for t in machine_types
        },
        "rows": rows,
        "type_rows": [r for r in rows if r["machine_id"] == "all"],
        "id_rows": [r for r in rows if r["machine_id"] != "all"],
        "score_definition": recs["score_definition"],
        "presets": presets_meta["presets"],
        "preset_names": list(presets_meta["presets"]),
        "grids": presets_meta["grids"],
        "fidelity": read_csv(build_dir / "masks" / "fidelity.csv"),
        "figures": figures_by_section,
        "figure_ids": {e["id"] for e in manifest},
        "geometry": geometry,
        "n_mels": geometry.n_mels,
        "T": geometry.target_T,
        "params": params,
        "params_yaml": yaml.safe_dump(params, sort_keys=False),
        "git": git,
        "versions": package_versions(),
        "engine": engine_version(engine),
        "calls": {
            r["machine_type"]: strategy_call(r, geometry)
            for r in rows
            if r["machine_id"] == "all" and r.get("status") == "ok"
        },
        "fit_keys": FIT_KEYS,
        "ci_level": params["recommend"]["ci_level"],
        "min_holdout_for_ci": MIN_HOLDOUT_FOR_CI,
        "parsimony": PARSIMONY,
    }
    for r in context["type_rows"]:
        if r.get("status") == "ok":
            r["summary_words"] = describe_fit(r, geometry.target_T)
    context["findings"] = findings(context)
    return context


def render_qmd(context: dict[str, Any], template_dir: Path = REPORT_DIR) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        # Quarto attributes look like {#fig-x}: keep Jinja comments out of their way.
        comment_start_string="<#--",
        comment_end_string="--#>",
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = md_escape
    # Metadata: Markdown-escaped text as a JSON string, which is valid YAML.
    env.filters["yaml_md"] = lambda v: json.dumps(md_escape(v))
    env.filters["num"] = fmt
    # Identifiers shown with spaces so long names (narrow_band_few_segments) wrap in table cells.
    env.filters["label"] = lambda v: md_escape(str(v).replace("_", " "))
    # Percentages keep small values visible: 0.002 -> "0.2%", 0.155 -> "15.5%", 0.5 -> "50%".
    env.filters["pct"] = lambda v: "–" if v in (None, "") else f"{float(v) * 100:.3g}%"
    env.filters["slug"] = lambda v: re.sub(r"[^a-z0-9]+", "-", str(v).lower()).strip("-") or "x"
    return env.get_template(TEMPLATE).render(**context)


def _stop(proc: subprocess.Popen) -> None:
    """End ``proc`` if it still runs (no-op after it finished)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def render_with_pandoc(qmd: Path, out_dir: Path, formats: list[str]) -> list[Path]:
    """HTML via pandoc (self-contained); PDF via pandoc -> Typst -> the typst compiler."""
    pandoc = pandoc_path()
    lua = (qmd.parent / "crossref.lua").resolve()
    common = [
        pandoc,
        qmd.name,
        "--from=markdown",
        f"--lua-filter={(qmd.parent / 'tabsets.lua').resolve()}",
        f"--lua-filter={lua}",
        "--number-sections",
        "--toc",
        "--toc-depth=2",
    ]
    made = []
    with contextlib.ExitStack() as stack:
        html = None
        if "html" in formats:
            # The HTML render runs while the PDF is made: two processes, about half the wait.
            tmp = stack.enter_context(atomic_path(out_dir / "report.html"))
            cmd = [
                *common,
                "--to=html5",
                "--standalone",
                "--embed-resources",
                "--mathml",
                f"--css={(qmd.parent / 'style.css').resolve()}",
                f"--include-after-body={(qmd.parent / 'report-js.html').resolve()}",
                f"--output={tmp.resolve()}",
            ]
            proc = subprocess.Popen(cmd, cwd=qmd.parent, stdout=PIPE, stderr=PIPE, text=True)
            stack.callback(_stop, proc)  # a failed PDF must not leave pandoc writing the HTML
            html = (cmd, proc)
        if "pdf" in formats:
            import typst

            typ = qmd.with_suffix(".typ")
            cmd = [
                *common,
                "--to=typst",
                "--standalone",
                "--metadata-file=typst-metadata.yaml",
                f"--output={typ.name}",
            ]
            subprocess.run(cmd, cwd=qmd.parent, check=True, capture_output=True, text=True)
            with atomic_path(out_dir / "report.pdf") as tmp_pdf:
                typst.compile(str(typ), output=str(tmp_pdf), root=str(qmd.parent.resolve()))
            made.append(out_dir / "report.pdf")
        if html is not None:
            cmd, proc = html
            stdout, stderr = proc.communicate()
            if proc.returncode:
                raise subprocess.CalledProcessError(proc.returncode, cmd, stdout, stderr)
            made.insert(0, out_dir / "report.html")
    return made


def render_with_quarto(qmd: Path, out_dir: Path, formats: list[str]) -> list[Path]:
    made = []
    for fmt_name, target in (("html", "html"), ("pdf", "typst")):
        if fmt_name in formats:
            out = out_dir / f"report.{fmt_name}"
            subprocess.run(
                ["quarto", "render", qmd.name, "--to", target, "--output", out.name],
                cwd=qmd.parent,
                check=True,
            )
            shutil.move(qmd.parent / out.name, out)
            made.append(out)
    return made


def report(
    params: dict[str, Any],
    params_path: str | Path = "params.yaml",
    build_dir: str | Path = "build",
    report_dir: str | Path = REPORT_DIR,
) -> list[Path]:
    """Write ``report/report.qmd`` and render it into ``report/_output/``.

    Parameters
    ----------
    params
        Validated params; reads ``report.*`` (and shows all params in the provenance).
    """
    report_dir = Path(report_dir)
    engine = choose_engine(params["report"]["engine"])
    context = build_context(params, params_path, Path(build_dir), report_dir / "figures", engine)
    qmd = report_dir / "report.qmd"
    write_text(qmd, render_qmd(context, report_dir))
    out_dir = report_dir / "_output"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if engine == "quarto":
            made = render_with_quarto(qmd, out_dir, params["report"]["formats"])
        else:
            made = render_with_pandoc(qmd, out_dir, params["report"]["formats"])
    except subprocess.CalledProcessError as err:
        raise RuntimeError(
            f"rendering failed: {' '.join(map(str, err.cmd[:3]))}...\n{err.stderr or ''}"
        ) from None
    log(f"report: {', '.join(str(p) for p in made)} ({engine})")
    return made
