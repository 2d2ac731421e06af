"""The watch loop's own behaviour, in process (the end-to-end watch tests are in test_pipeline)."""

import builtins
import os
import signal
import threading

import pytest

from analysis import watch as watch_module


def test_a_stop_signal_during_the_watching_line_is_a_clean_stop(tmp_path, monkeypatch, capsys):
    """A process manager may send SIGTERM as soon as it reads "watching": the signal then
    lands while that line is still being printed, and must end the watch as "stopped", not
    escape it as an interrupt."""
    (tmp_path / "params.yaml").write_text("x: 1\n")
    monkeypatch.chdir(tmp_path)
    real_print = builtins.print

    def print_then_signal(*args, **kwargs):
        real_print(*args, **kwargs)
        if args and "watching" in str(args[0]):
            os.kill(os.getpid(), signal.SIGTERM)  # handled before print returns

    monkeypatch.setattr(builtins, "print", print_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    try:
        watch_module.watch(tmp_path / "params.yaml", poll_s=0.01, command=["true"])
    except KeyboardInterrupt:
        pytest.fail("the stop signal escaped the watch")
    assert "watch: stopped" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_watch_runs_after_a_save_and_again_for_a_save_during_that_run(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("x: 1\n")
    monkeypatch.chdir(tmp_path)
    runs = []

    def fake_repro(path, command):
        runs.append(params.read_text())
        if len(runs) == 1:
            params.write_text("x: 3\n")  # saved while the first run is going
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr(watch_module, "run_repro", fake_repro)
    real_print = builtins.print

    def print_then_save(*args, **kwargs):
        real_print(*args, **kwargs)
        if args and "watching" in str(args[0]):
            params.write_text("x: 2\n")  # the user's save after the watch started

    monkeypatch.setattr(builtins, "print", print_then_save)
    guard = threading.Timer(10, os.kill, (os.getpid(), signal.SIGTERM))  # a lost save: stop
    guard.start()
    try:
        watch_module.watch(params, debounce_s=0.05, poll_s=0.01, command=["true"])
    finally:
        guard.cancel()
    assert runs == ["x: 2\n", "x: 3\n"]
