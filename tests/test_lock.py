"""requirements/lock.txt (the README's set-up installs it) agrees with pyproject.toml: every requirement of the
package and of the extras the set-up installs is pinned there, at a version its range allows. A hand edit of
either file that the other does not follow fails here; scripts/lock.sh rewrites the lock."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
ROOT = Path(__file__).resolve().parent.parent
EXTRAS_INSTALLED = ("dev", "smollm2")  # scripts/bootstrap.sh: pip install -e ".[dev,smollm2]"


def locked_versions() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, version = line.partition("==")
            assert version, f"requirements/lock.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    return pins


def test_every_requirement_is_pinned_in_the_lock_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in EXTRAS_INSTALLED
                                        for r in project["optional-dependencies"][extra]]
    pins = locked_versions()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements/lock.txt: run bash scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/lock.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}: "
            "run bash scripts/lock.sh")


def test_every_dependency_has_an_upper_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        requirement = Requirement(text)
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
            f"pyproject.toml: {text} has no upper bound (the next major is what CI tests)")


def test_the_torch_pin_of_the_lock_is_the_one_bootstrap_installs():
    pin = (ROOT / "requirements" / "torch.in").read_text().split("torch==")[1].split()[0]
    assert locked_versions()["torch"].public == pin
