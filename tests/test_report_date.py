"""The report's date comes from params, SOURCE_DATE_EPOCH or the last commit: never from the
day it is rendered (else the same inputs would give different report bytes)."""

from __future__ import annotations

import calendar
import copy
import datetime as real_dt
import types

import pytest
import yaml

from analysis import report
from analysis.params import ParamsError, validate_params
from tests.conftest import ROOT

GIT = {"commit": "0123456789abcdef", "commit_epoch": "1577970000"}  # 2020-01-02 13:00 UTC
NO_GIT = {"commit": "unknown (not a git checkout)", "commit_epoch": ""}


def clock_on(day: real_dt.date) -> types.SimpleNamespace:
    """A stand-in for the ``datetime`` module whose clock reads ``day``, noon UTC."""

    class Date(real_dt.date):
        @classmethod
        def today(cls):
            return cls(day.year, day.month, day.day)

    class Datetime(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(day.year, day.month, day.day, 12, tzinfo=tz)

        @classmethod
        def today(cls):
            return cls(day.year, day.month, day.day, 12)

    return types.SimpleNamespace(date=Date, datetime=Datetime, UTC=real_dt.UTC)


@pytest.mark.parametrize(
    "git, date, env",
    [
        (NO_GIT, "commit", None),  # nothing to date it by: undated, not today
        (GIT, "commit", None),
        (GIT, "commit", "1700000000"),
        (NO_GIT, "2026-12-01", None),
        (GIT, "2026-12-01", "1700000000"),
    ],
)
def test_the_date_does_not_depend_on_the_day_it_is_rendered(monkeypatch, git, date, env):
    if env is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", env)
    seen = set()
    for day in (real_dt.date(2024, 2, 29), real_dt.date(2031, 7, 4)):
        monkeypatch.setattr(report, "_dt", clock_on(day))
        label, epoch = report.report_date(git, date), report.report_epoch(git, date)
        assert "2024" not in label and "2031" not in label, label
        seen.add((label, epoch))
    assert len(seen) == 1, seen


def test_each_source_of_the_date_is_named_and_used(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert report.report_date(NO_GIT) == (
        "Undated (not a git checkout: set report.date or SOURCE_DATE_EPOCH to date it)"
    )
    assert report.report_epoch(NO_GIT) is None
    assert report.report_date(GIT) == "Date of commit 0123456789ab: 2020-01-02"
    # report.date wins over SOURCE_DATE_EPOCH and the commit; its moment is midnight UTC.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert report.report_date(GIT, "2026-12-01") == "Date (report.date): 2026-12-01"
    assert report.report_epoch(GIT, "2026-12-01") == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert report.report_date(GIT) == "Date (SOURCE_DATE_EPOCH): 2023-11-14"


def test_an_undated_report_gets_a_fixed_pdf_date_not_the_clock():
    assert report.UNDATED_EPOCH == 0


@pytest.mark.parametrize(
    "value, expected",
    [("commit", "commit"), ("2026-12-01", "2026-12-01"), (real_dt.date(2026, 12, 1), "2026-12-01")],
)
def test_report_date_param_accepts_commit_or_a_day(value, expected):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["report"]["date"] = value
    assert validate_params(p)["report"]["date"] == expected


@pytest.mark.parametrize("value", ["today", "2026-13-01", "01.12.2026", 20261201, ""])
def test_a_bad_report_date_names_the_key(value):
    p = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["report"]["date"] = value
    with pytest.raises(ParamsError, match=r"^report\.date:"):
        validate_params(p)
