"""Rendering the report's ``.qmd``: Jinja2 for the source, then Quarto or pandoc + Typst.

The Quarto CLI renders it where it is installed; otherwise pandoc (from the
``pypandoc-binary`` wheel) makes a self-contained HTML file and a Typst file that
the ``typst`` wheel compiles to PDF. The Lua filter ``report/crossref.lua`` resolves
``@fig-``/``@tbl-`` references there.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from subprocess import PIPE
from typing import Any

import jinja2
import numpy as np

from analysis.dcase import unit_label
from analysis.io import atomic_path

REPORT_DIR = Path("report")
TEMPLATE = "report.qmd.j2"
# Every file under report/ that the render reads: the report stage's deps in dvc.yaml, what
# `watch` watches, and what the benchmarks copy.
TEMPLATE_FILES: tuple[str, ...] = (
    TEMPLATE,
    "crossref.lua",
    "tabsets.lua",
    "report-js.html",
    "style.css",
    "typst-metadata.yaml",
)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&$@~^\"'=:;])")


def md_escape(value: Any) -> str:
    """Text safe inside Markdown and HTML: every ASCII punctuation mark backslash-escaped, and
    line breaks shown as ``\\n`` (a file name may hold one; it would split a table row)."""
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """``value`` verbatim as an inline code span: fenced with more backticks than it holds
    (no backslash escapes, which a code span would print)."""
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def typst_text(value: Any) -> str:
    """Text safe inside a Typst content block ``[...]``: its markup characters escaped."""
    return re.sub(r"([\\\[\]#*_`$<>@~/=\-])", r"\\\1", str(value).replace("\n", " "))


def span(values: Any, spec: str = ".2g") -> str:
    """A 10th–90th percentile pair as ``lo–hi`` (one number where they agree); "–" if absent."""
    if not values:
        return "–"
    cast = int if spec.endswith("d") else float
    lo, hi = (format(cast(v), spec) for v in values)
    return lo if lo == hi else f"{lo}–{hi}"


def khz(values: Any) -> str:
    """A pair of frequencies in Hz as a kHz range with two significant digits."""
    if not values:
        return "–"
    return span([float(v) / 1000 for v in values], ".2g")


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


def significant(value: Any, digits: int = 3) -> str:
    """A score or difference with ``digits`` significant digits (0.00612, 0.147, -0.0123),
    so small intervals do not round to the same two decimals; blank for missing values."""
    if value is None or value == "":
        return "–"
    f = float(value)
    if not np.isfinite(f):
        return "–"
    return np.format_float_positional(f, precision=digits, unique=False, fractional=False, trim="-")


_HYPHEN_MINUS = re.compile(r"(?<![\w.])-(?=\.?\d)")


def minus(text: Any) -> str:
    """``text`` with the minus sign of every number set as U+2212 ("−0.012"), so the report
    prints one minus sign (the hyphen stays a hyphen: "clip-level", "10-90")."""
    return _HYPHEN_MINUS.sub("\u2212", str(text))


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
    from analysis.report_text import hz_words  # here: report_text imports this module

    env.filters["md"] = md_escape
    # Where a band lies, lower to upper edge in Hz/kHz ("1.1–1.3 kHz"); "–" when unknown.
    env.filters["band"] = lambda v: md_escape(hz_words(v) or "–")
    # Metadata: Markdown-escaped text as a JSON string, which is valid YAML.
    env.filters["yaml_md"] = lambda v: json.dumps(md_escape(v))
    env.filters["num"] = lambda v, digits=3: minus(fmt(v, digits))
    env.filters["sig"] = lambda v, digits=3: minus(significant(v, digits))
    env.filters["code"] = md_code
    env.filters["typst_text"] = typst_text
    env.filters["span"] = span
    env.filters["khz"] = khz
    env.filters["unit"] = lambda v: md_escape(unit_label(v))  # "section 00 (source)", "id_00"
    # Identifiers shown with spaces so long names (narrow_band_few_segments) wrap in table cells.
    env.filters["label"] = lambda v: md_escape(str(v).replace("_", " "))
    # Percentages keep small values visible: 0.002 -> "0.2%", 0.155 -> "15.5%", 0.5 -> "50%".
    env.filters["pct"] = lambda v: "–" if v in (None, "") else f"{float(v) * 100:.3g}%"
    env.filters["slug"] = lambda v: re.sub(r"[^a-z0-9]+", "-", str(v).lower()).strip("-") or "x"
    text = env.get_template(TEMPLATE).render(**context)
    missing = unresolved_references(text)
    if missing:
        raise ValueError(
            "the report cites what this run does not draw (guard it in the template): "
            + ", ".join(f"@{ref}" for ref in missing)
        )
    return text


_REFERENCE = re.compile(r"(?<![\\\w])@((?:fig|tbl|sec)-[A-Za-z0-9_-]*[A-Za-z0-9])")
_LABEL = re.compile(r"\{#((?:fig|tbl|sec)-[A-Za-z0-9_-]+)")


def unresolved_references(qmd_text: str) -> list[str]:
    """Ids cited as ``@fig-``/``@tbl-``/``@sec-`` that no figure, table or heading of
    ``qmd_text`` carries, in order of first citation. Checked before either engine runs:
    Quarto would print such a reference as "?@fig-x" and go on."""
    labels = set(_LABEL.findall(qmd_text))
    cited = dict.fromkeys(_REFERENCE.findall(qmd_text))
    return [ref for ref in cited if ref not in labels]


def _stop(proc: subprocess.Popen) -> None:
    """End ``proc`` if it still runs (no-op after it finished)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def pandoc_command(qmd: Path) -> list[str]:
    """The pandoc call both formats share: the ``.qmd`` as Markdown, the tab-set and cross-ref
    Lua filters, numbered sections."""
    return [
        pandoc_path(),
        qmd.name,
        "--from=markdown",
        f"--lua-filter={(qmd.parent / 'tabsets.lua').resolve()}",
        f"--lua-filter={(qmd.parent / 'crossref.lua').resolve()}",
        "--number-sections",
    ]


def start_html(common: list[str], qmd: Path, output: Path) -> tuple[list[str], subprocess.Popen]:
    """Start pandoc writing the self-contained HTML (contents list, the report's CSS and JS) to
    ``output``; returns the command and the running process."""
    cmd = [
        *common,
        "--to=html5",
        "--standalone",
        "--toc",
        "--toc-depth=2",
        "--embed-resources",
        "--mathml",
        f"--css={(qmd.parent / 'style.css').resolve()}",
        f"--include-after-body={(qmd.parent / 'report-js.html').resolve()}",
        f"--output={output.resolve()}",
    ]
    return cmd, subprocess.Popen(cmd, cwd=qmd.parent, stdout=PIPE, stderr=PIPE, text=True)


def write_pdf(common: list[str], qmd: Path, pdf: Path, timestamp: int | None) -> None:
    """pandoc -> ``report.typ`` beside the ``.qmd`` -> the typst compiler -> ``pdf``
    (atomically)."""
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
    with atomic_path(pdf) as tmp_pdf:
        typst.compile(
            str(typ), output=str(tmp_pdf), root=str(qmd.parent.resolve()), timestamp=timestamp
        )


def render_with_pandoc(
    qmd: Path, out_dir: Path, formats: list[str], timestamp: int | None = None
) -> list[Path]:
    """HTML via pandoc (self-contained); PDF via pandoc -> Typst -> the typst compiler.

    ``timestamp`` (seconds since the epoch) is the PDF's creation date, so two renders of the
    same inputs give the same bytes; None takes the clock. The contents list is the HTML's
    (the PDF's first page is the answer; its viewer lists the headings as bookmarks).
    """
    common = pandoc_command(qmd)
    made = []
    with contextlib.ExitStack() as stack:
        html = None
        if "html" in formats:
            # The HTML render runs while the PDF is made: two processes, about half the wait.
            tmp = stack.enter_context(atomic_path(out_dir / "report.html"))
            html = start_html(common, qmd, tmp)
            stack.callback(_stop, html[1])  # a failed PDF must not leave pandoc writing the HTML
        if "pdf" in formats:
            write_pdf(common, qmd, out_dir / "report.pdf", timestamp)
            made.append(out_dir / "report.pdf")
        if html is not None:
            cmd, proc = html
            stdout, stderr = proc.communicate()
            if proc.returncode:
                raise subprocess.CalledProcessError(proc.returncode, cmd, stdout, stderr)
            made.insert(0, out_dir / "report.html")
    return made


def render_with_quarto(
    qmd: Path, out_dir: Path, formats: list[str], timestamp: int | None = None
) -> list[Path]:
    """Both formats with the Quarto CLI (its Typst honours ``SOURCE_DATE_EPOCH``)."""
    env = dict(os.environ)
    if timestamp is not None:
        env["SOURCE_DATE_EPOCH"] = str(timestamp)
    made = []
    for fmt_name, target in (("html", "html"), ("pdf", "typst")):
        if fmt_name in formats:
            out = out_dir / f"report.{fmt_name}"
            subprocess.run(
                ["quarto", "render", qmd.name, "--to", target, "--output", out.name],
                cwd=qmd.parent,
                check=True,
                env=env,
            )
            shutil.move(qmd.parent / out.name, out)
            made.append(out)
    return made
