"""The core package must not import the orchestration stack (Prefect, Ray)."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "sleeptime"
FORBIDDEN = {"prefect", "ray", "prefect_ray", "flows", "tasks"}


def test_core_package_has_no_prefect_or_ray_imports():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE.parent)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    # The CLI is the one place allowed to start the orchestrated flow.
    offenders = [o for o in offenders if not o.startswith("sleeptime/cli.py")]
    assert offenders == []
