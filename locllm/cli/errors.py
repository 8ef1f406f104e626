"""The error policy of every ``locllm`` command: an expected failure (a bad path, an unwritable output, a
corrupt or foreign file, malformed JSON or YAML, a wrong device, a full disk) ends with ONE line naming
the file, the problem and the fix, and exit code 1; an interruption with one line and 130. Anything else
is a bug and keeps its traceback, as does every failure with ``--debug`` or ``LOCLLM_DEBUG=1``."""

from __future__ import annotations

import errno
import os
import pickle
import sys

INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)
MAX_MESSAGE_CHARS = 600  # a message may quote a user's input; it stays one readable line

# What to do about an OSError whose message names only the errno.
_OS_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "check the permissions or write elsewhere",
    errno.EPERM: "check the permissions or write elsewhere",
}


def debug_requested(flag: bool) -> bool:
    return flag or os.environ.get("LOCLLM_DEBUG", "") not in ("", "0")


def user_error_message(error: BaseException) -> str | None:
    """The one line for an expected failure; None for a bug (its traceback is what helps)."""
    if isinstance(error, KeyError) and error.args:  # our KeyErrors carry a sentence, not a bare key
        message = str(error.args[0])
    elif isinstance(error, pickle.UnpicklingError):  # a torch file read without our checks
        message = ("a weight file holds non-tensor objects (pickled Python) and is not loaded: "
                   "re-save its state dict with torch.save or safetensors")
    elif isinstance(error, OSError):
        message = str(error)
        fix = _OS_FIXES.get(error.errno)
        if fix and fix not in message:
            message += f": {fix}"
    elif isinstance(error, (ValueError, _yaml_error(), _out_of_memory_error())):
        message = str(error)
    else:
        return None
    return one_line(message or type(error).__name__)


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` with its line breaks folded and cut to ``limit`` characters."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def report_failure(command: str, error: BaseException, debug: bool) -> int:
    """Print the line for an expected failure and return the exit code; re-raise a bug (or with ``debug``)."""
    if isinstance(error, KeyboardInterrupt):
        if debug:
            raise error
        print(f"\nlocllm {command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    message = user_error_message(error)
    if message is None or debug:
        raise error
    print(f"locllm {command}: error: {message}", file=sys.stderr)
    return 1


def _yaml_error() -> type:
    yaml = sys.modules.get("yaml")  # only a command that read YAML can fail on it
    return yaml.YAMLError if yaml else ValueError


def _out_of_memory_error() -> type:
    torch = sys.modules.get("torch")
    return torch.OutOfMemoryError if torch and hasattr(torch, "OutOfMemoryError") else ValueError
