"""``python -m analysis STAGE``: the entry point of every pipeline stage.

Every stage validates the whole ``params.yaml`` first, so a wrong key or value
stops the run before any work, with a message naming the key.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.dcase import DataLayoutError
from analysis.io import clean_own_scratch, clean_stale_scratch, probe_writable, write_text
from analysis.params import ParamsError, load_params


def _synthesize(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.synthesize import synthesize

    synthesize(params, args.out)


def _extract(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.extract import extract

    extract(params, args.machine_type, data_root=args.data_root, out_dir=args.out)


def _localize(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.localize import localize

    localize(params, args.machine_type)


def _power(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.power import power_stage

    power_stage(params)


def _masks(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.masks import masks_stage

    masks_stage(params)


def _recommend(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.recommend import recommend

    recommend(params)


def _downstream(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.downstream import downstream

    downstream(params)


def _figures(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.figures import figures

    figures(params)


def _report(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.report import report

    report(params, args.params)


def _check_params(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.check_params import check_all

    check_all(params)
    if args.mel_table:
        from analysis.mel import MelGeometry

        MelGeometry.from_params(params).write_mel_table(args.mel_table)
    if args.stamp:
        # Constant content: a params change that passes reruns this stage and nothing more.
        write_text(args.stamp, "params checked: ok\n")
    print(f"{args.params}: ok", file=sys.stderr if args.stamp else sys.stdout)


def _watch(params: dict[str, Any], args: argparse.Namespace) -> None:
    from analysis.watch import watch

    watch(args.params, debounce_s=args.debounce, poll_s=args.poll)


STAGES: dict[str, tuple[Callable, str]] = {
    "synthesize": (_synthesize, "write the synthetic DCASE-like data set (data/synthetic/)"),
    "extract": (_extract, "log-mel features of one machine type (build/features/TYPE/)"),
    "localize": (_localize, "where real anomalies sit, per machine ID (build/localization/)"),
    "power": (
        _power,
        "what the localization can detect: spike-ins on normal clips (build/power.*)",
    ),
    "masks": (_masks, "draw masks for every preset, statistics and resize fidelity (build/masks/)"),
    "recommend": (_recommend, "score presets and fit parameter ranges (build/recommendations.*)"),
    "downstream": (
        _downstream,
        "proxy detectors trained with each mask setting: AUC on the test clips (build/downstream.*)",
    ),
    "figures": (_figures, "draw the report's figures (report/figures/)"),
    "report": (_report, "render the report to HTML and PDF (report/_output/)"),
    "check-params": (
        _check_params,
        "validate params.yaml, the mel filters, colormaps and data folders, and exit",
    ),
    "watch": (_watch, "rerun `dvc repro` whenever params.yaml or the report template is saved"),
}


# Disk full, quota, file too large, read-only or not permitted: the user's machine, not a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Audio-specific anomaly-mask analysis pipeline. Normally run through `dvc repro`.",
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, (_, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "synthesize":
            p.add_argument("--out", default="data/synthetic", help="output folder")
        if name in ("extract", "localize"):
            p.add_argument("machine_type", help="fan, pump, slider, valve, ToyCar or ToyConveyor")
        if name == "extract":
            p.add_argument("--data-root", default=None, help="override data.root")
            p.add_argument(
                "--out", default=None, help="output folder (default build/features/TYPE)"
            )
        if name == "check-params":
            p.add_argument(
                "--stamp", default=None, help="write this file when all is well (DVC's first stage)"
            )
            p.add_argument(
                "--mel-table",
                default=None,
                help="also write librosa's mel filter bank here, for the stages to read",
            )
        if name == "watch":
            p.add_argument(
                "--debounce", type=float, default=1.0, help="seconds of quiet before a run"
            )
            p.add_argument("--poll", type=float, default=0.3, help="seconds between file checks")
    return parser


def is_strategy_error(err: BaseException) -> bool:
    """Whether ``err`` is a mask strategy's error (:class:`analysis.strategies.errors.StrategyError`),
    told without importing the strategies: a process that never imported them cannot have
    raised one, and the stages that draw no mask then do not depend on their code."""
    errors = sys.modules.get("analysis.strategies.errors")
    return errors is not None and isinstance(err, errors.StrategyError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        machine_type = getattr(args, "machine_type", None)
        if machine_type is not None and machine_type not in params["data"]["machine_types"]:
            raise ParamsError(
                f"data.machine_types: {machine_type!r} is not listed "
                f"({', '.join(params['data']['machine_types'])})"
            )
        clean_stale_scratch()  # temp files of stages killed earlier (outside DVC's paths)
        probe_writable(getattr(args, "out", None) or Path.cwd())
        STAGES[args.stage][0](params, args)
    except ParamsError as err:
        print(f"error: {Path(args.params).name}: {err}", file=sys.stderr)
        return 2
    except DataLayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ValueError as err:
        if not is_strategy_error(err):
            raise
        # A user's strategy failed (masks.presets.NAME: ...): the message, not our traceback.
        print(f"error: {args.stage}: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        print(f"error: {args.stage}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"error: {args.stage}: cannot write{where}: {err.strerror or err}. Outputs are written "
            "whole or not at all, so earlier results are unchanged; free space or fix the "
            "permissions, then run again.",
            file=sys.stderr,
        )
        return 4
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        clean_own_scratch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
