"""The methods text names every term of the fit's objective, as the code computes it.

The report template's sentence on what the search minimizes is rendered with the report's own
methods context; the formula it prints is then evaluated and compared with
``analysis.fit.fit_objective`` on settings with known values, and every parameter of
``analysis.fit.SIMPLICITY_TERMS`` must be named in it. A term added to the code and not to the
text (or the reverse) fails here.
"""

from __future__ import annotations

import math
import re

import pytest

from analysis.dcase import ID_WORDS
from analysis.fit import SIMPLICITY_TERMS, SIMPLICITY_WEIGHT, fit_objective
from analysis.mel import MelGeometry
from analysis.render import TEMPLATE, render_qmd
from analysis.report import methods_context
from tests.conftest import ROOT

OBJECTIVE = "the search minimizes the score plus"


def objective_paragraph() -> str:
    """The template's paragraph that states the fit's objective, as the template holds it."""
    text = (ROOT / "report" / TEMPLATE).read_text()
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if OBJECTIVE in p]
    assert len(paragraphs) == 1, "the methods text must state the fit's objective once"
    return paragraphs[0]


@pytest.fixture
def rendered(tmp_path, default_params) -> str:
    (tmp_path / TEMPLATE).write_text(objective_paragraph())
    geometry = MelGeometry.from_params(default_params)
    context = {"params": default_params, "u": ID_WORDS, **methods_context(default_params, geometry)}
    return " ".join(render_qmd(context, tmp_path).split())


def printed_formula(rendered: str) -> str:
    """The expression the text adds to the score (between the objective's words and ", because")."""
    start = rendered.index(OBJECTIVE) + len(OBJECTIVE)
    return rendered[start : rendered.index(", because", start)].strip()


def test_the_text_names_every_term_of_the_objective(rendered):
    formula = printed_formula(rendered)
    assert SIMPLICITY_TERMS, "the fit has simplicity terms to name"
    for key, _ in SIMPLICITY_TERMS:
        assert key in formula, f"the methods text omits the objective's {key} term: {formula}"
    assert formula.startswith(f"{SIMPLICITY_WEIGHT} ×")


@pytest.mark.parametrize("max_segments, max_bands", [(1, 1), (5, 1), (1, 4), (160, 3), (2, 8)])
def test_the_printed_formula_is_the_objective_the_search_minimizes(
    rendered, default_params, max_segments, max_bands
):
    """Evaluated with a setting's values, the printed penalty equals fit_objective minus the
    score: every term is there, with its own scale, and no term the code lacks."""
    geometry = MelGeometry.from_params(default_params)
    n_mels, T = geometry.spectrogram_shape
    setting = {"max_segments": max_segments, "max_bands": max_bands}
    names = {"log": math.log, "T": T, "n_mels": n_mels, **setting}
    expression = printed_formula(rendered).replace("×", "*")
    printed = eval(expression, {"__builtins__": {}}, names)  # noqa: S307 - our own text
    score = 0.25
    assert printed == pytest.approx(fit_objective(score, setting, n_mels, T) - score, rel=1e-12)
    # By hand, for the two terms the fit has today: segments over T/2, bands over n_mels/2.
    by_hand = SIMPLICITY_WEIGHT * (
        math.log1p(max_segments) / math.log1p(T / 2)
        + math.log1p(max_bands) / math.log1p(n_mels / 2)
    )
    assert printed == pytest.approx(by_hand, rel=1e-12)
