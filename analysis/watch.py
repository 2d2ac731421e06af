"""``python -m analysis watch``: rerun the pipeline whenever its inputs are saved.

Polls ``params.yaml`` and the report template files (modification time and
size), waits until they have been quiet for ``debounce_s`` (editors save in
several steps), validates the params, runs ``dvc repro``, and prints which
stages reran and where the report is. Ctrl-C stops it cleanly, ending a run
in progress.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from analysis.params import ParamsError, load_params
from analysis.render import REPORT_DIR, TEMPLATE_FILES

WATCHED = ("params.yaml", *(f"{REPORT_DIR}/{name}" for name in TEMPLATE_FILES))
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")


def snapshot(paths: list[Path]) -> tuple:
    """What changes when a file is saved: (mtime_ns, size) per file, None if missing."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def stages_run(dvc_output: str) -> list[str]:
    """Stage names from DVC's "Running stage 'NAME':" lines, in order."""
    return RUNNING_STAGE.findall(dvc_output)


def run_repro(params_path: Path, command: list[str]) -> int:
    try:
        load_params(params_path)
    except ParamsError as err:
        print(f"watch: not running: {params_path.name}: {err}", flush=True)
        return 2
    print(f"watch: running {' '.join(command)}", flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if RUNNING_STAGE.search(line) or line.startswith(("ERROR", "error")):
                print("  " + line.rstrip(), flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    ran = stages_run("".join(lines))
    if code != 0:
        print(
            f"watch: dvc repro failed (exit {code}); last lines:\n" + "".join(lines[-15:]),
            flush=True,
        )
    else:
        print(f"watch: reran: {', '.join(ran) if ran else 'nothing (all up to date)'}", flush=True)
        print("watch: report: report/_output/report.html, report/_output/report.pdf", flush=True)
    return code


def watch(
    params_path: str | Path = "params.yaml",
    debounce_s: float = 1.0,
    poll_s: float = 0.3,
    command: list[str] | None = None,
) -> None:
    """Watch the inputs and rerun ``dvc repro`` after each save, until Ctrl-C."""
    params_path = Path(params_path)
    command = command or [sys.executable, "-m", "dvc", "repro"]
    paths = [params_path, *(Path(p) for p in WATCHED[1:])]
    # Ctrl-C is how a watch ends, so take SIGINT back even when the shell that
    # started us ignores it (any `cmd &` in a non-interactive shell does), and
    # treat SIGTERM from a process manager the same way (default_int_handler
    # raises KeyboardInterrupt for any signal). The caller's handlers come back
    # when the watch ends.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.default_int_handler) for s in stop_signals}
    try:
        # Inside the try: a stop signal right after this line is a clean stop too (it used to
        # arrive before the try now and then, and ended the watch as "interrupted").
        seen, changed_at = snapshot(paths), None
        print(f"watch: watching {', '.join(str(p) for p in paths)} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(poll_s)
            now = snapshot(paths)
            if now != seen:
                seen, changed_at = now, time.monotonic()
                continue
            if changed_at is not None and time.monotonic() - changed_at >= debounce_s:
                changed_at = None
                # `seen` stays the state this run started from: a save during the run differs
                # from it at the next poll and triggers the next run.
                run_repro(params_path, command)
    except KeyboardInterrupt:
        print("watch: stopped", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
