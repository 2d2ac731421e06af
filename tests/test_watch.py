"""The watch loop's own behaviour, in process (the end-to-end watch tests are in test_pipeline)."""

import builtins
import os
import signal

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
