"""The package's floors (README "Layout"): a module imports only its own floor or lower ones, the
floor of engine / evaluation / training / convert holds siblings that never import each other
(inference knows no training; engine is the Localizer and how it answers), apis (what uses the Localizer
and the evaluation's log: data-set prediction, video, reports, person boxes, the demo's pictures, the
benchmark) sits above them and below the CLI and the web demo, and no module imports itself back through
others."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "locllm"

# The lowest matching prefix decides.
FLOORS = {
    "keypoints": 0, "viz": 0, "bounds": 0,
    "prompts": 1, "codecs": 1, "data": 1,
    "models": 2,
    "engine": 3, "evaluation": 3, "training": 3, "convert": 3,
    "apis": 4,
    "serve": 5, "cli": 5,
    "__main__": 6,
}
SIBLINGS = 3  # the floor whose folders never import each other


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The ``locllm`` modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out), without
    the ``locllm.`` prefix."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for statement in block.body for node in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        elif node.module and node.module.startswith("locllm."):
            target = node.module.removeprefix("locllm.")
        else:
            continue
        # "from . import x" imports module x; "from .m import name" names something in m (resolved later)
        found.update([target] + [f"{target}.{alias.name}".lstrip(".") for alias in node.names])
    return {target for target in found if target}


def floor(module: str) -> tuple[str, int]:
    module = resolve(module)
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix.split(".")[0], FLOORS[prefix]
    raise AssertionError(f"locllm.{module} is in no floor of tests/test_layout.py: add its folder to FLOORS")


def test_every_import_goes_down_or_across_its_own_folder():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if not source:
            continue  # locllm/__init__.py
        folder, level = floor(source)
        for target in runtime_imports(path):
            target_folder, target_level = floor(target)
            if target_level > level or (target_level == level == SIBLINGS and target_folder != folder):
                wrong.append(f"locllm.{source} (floor {level}) imports locllm.{target} (floor {target_level})")
    assert not wrong, "\n".join(wrong)


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def resolve(target: str) -> str:
    """The module an imported dotted name is or lies in (``models.LocLLMConfig`` -> ``models``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def test_no_import_cycle():
    graph = {module_name(path): runtime_imports(path) for path in PACKAGE.rglob("*.py")}
    edges = {module: {resolve(t) for t in targets} - {"", module} for module, targets in graph.items()}
    # a package's __init__ importing its own modules is how packages export; only other edges can close a cycle
    edges = {m: {t for t in ts if not m or not t.startswith(m + ".")} for m, ts in edges.items()}
    visiting, done, cycles = set(), set(), []

    def visit(module: str, trail: list[str]) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(" -> ".join(trail[trail.index(module):] + [module]))
            return
        visiting.add(module)
        for target in sorted(edges.get(module, ())):
            visit(target, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert not cycles, "\n".join(cycles)
