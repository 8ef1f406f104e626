"""Print the versions an environment resolved next to requirements/lock.txt: the main libraries always, and every
package whose version differs from the lock or that the lock does not name (CI's newest-versions run)."""

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.utils import canonicalize_name

MAIN = ("torch", "transformers", "peft", "accelerate", "huggingface-hub", "tokenizers", "safetensors", "numpy",
        "opencv-python-headless", "pillow", "gradio", "pytest")

lock = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "requirements" / "lock.txt")
locked = {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)}
installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
for name in sorted(installed):
    version, pinned = installed[name], locked.get(name)
    if name == "locllm" or (name not in MAIN and pinned == version):
        continue
    note = "as locked" if pinned == version else f"lock: {pinned}" if pinned else "not in the lock"
    print(f"  {name}=={version} ({note})")
