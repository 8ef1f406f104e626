"""The error policy of every command: an expected failure is one line and exit 1, Ctrl-C one line and 130,
a bug keeps its traceback, and ``--debug`` / ``LOCLLM_DEBUG=1`` give the traceback of anything."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from locllm.cli import main
from locllm.cli.errors import MAX_MESSAGE_CHARS, user_error_message

from .conftest import one_line_error

REPO = Path(__file__).resolve().parents[2]


def run_failing(monkeypatch, error: BaseException, *flags) -> int:
    """``locllm [flags] demo`` where the command raises ``error`` as soon as it runs."""
    import locllm.cli.demo as demo

    def run(args):
        raise error
    monkeypatch.setattr(demo, "run", run)
    return main([*flags, "demo"])


@pytest.mark.parametrize("error", [
    FileNotFoundError("image not found: x.png"),
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out.json"),
    PermissionError(errno.EACCES, os.strerror(errno.EACCES), "out.json"),
    ValueError("a.json: entry 3 is not a detection"),
    KeyError("unknown keypoint 'tail'"),
    yaml.YAMLError("config.yaml: mapping values are not allowed here"),
])
def test_expected_failures_are_one_line_and_exit_1(monkeypatch, capsys, error):
    """Bad paths, full or unwritable disks, malformed inputs and YAML: one line, exit 1, no traceback."""
    assert run_failing(monkeypatch, error) == 1
    assert one_line_error(capsys.readouterr().err).startswith("locllm demo: error: ")


def test_os_errors_say_the_fix(monkeypatch, capsys):
    """A full disk names the file, the problem and what to do."""
    assert run_failing(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out.json")) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "out.json" in line and "No space left" in line and "free some space" in line


def test_interruption_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C: one line saying so, exit 130 (the shell's code for SIGINT), no traceback."""
    assert run_failing(monkeypatch, KeyboardInterrupt()) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("error", [TypeError("bug"), AttributeError("bug"), RuntimeError("bug"), AssertionError()])
def test_bugs_keep_their_traceback(monkeypatch, error):
    """Anything not an expected failure is a bug: it propagates, traceback and all."""
    with pytest.raises(type(error)):
        run_failing(monkeypatch, error)


def test_debug_flag_and_environment_show_the_traceback(monkeypatch):
    """--debug and LOCLLM_DEBUG=1 re-raise an expected failure and an interruption."""
    with pytest.raises(ValueError):
        run_failing(monkeypatch, ValueError("bad"), "--debug")
    with pytest.raises(KeyboardInterrupt):
        run_failing(monkeypatch, KeyboardInterrupt(), "--debug")
    monkeypatch.setenv("LOCLLM_DEBUG", "1")
    with pytest.raises(ValueError):
        run_failing(monkeypatch, ValueError("bad"))


def test_long_and_multi_line_messages_are_one_bounded_line():
    """A message quoting a huge or multi-line input stays one line of bounded length."""
    message = user_error_message(ValueError("first\nsecond " + "x" * 10_000))
    assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS and message.startswith("first second")


def test_refused_pickle_never_suggests_weights_only_false():
    """torch's UnpicklingError, wherever it escapes, becomes our sentence without torch's hint."""
    import pickle

    message = user_error_message(pickle.UnpicklingError("Weights only load failed. Re-running `torch.load` with "
                                                        "`weights_only` set to `False` will likely succeed"))
    assert "non-tensor objects" in message and "weights_only" not in message


@pytest.mark.parametrize("device, expected", [("foo", "is not a device"), ("cuda:99", "CUDA devices")])
def test_wrong_device_is_refused_before_any_work(tmp_path, capsys, device, expected):
    """An unknown --device, or a CUDA device this machine lacks: one line before anything is loaded."""
    assert main(["predict", str(tmp_path / "missing.png"), "--device", device]) == 1
    assert expected in one_line_error(capsys.readouterr().err)


def test_real_command_line_prints_one_line_without_traceback(tmp_path):
    """The installed entry point, as a user runs it: exit 1 and one line for a missing image."""
    result = subprocess.run([sys.executable, "-m", "locllm", "predict", str(tmp_path / "nowhere.png")],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 1
    assert "nowhere.png" in one_line_error(result.stderr)
