"""The package's stages import one way: from the command line down to the file formats."""

from __future__ import annotations

import ast

from helpers import REPO

SRC = REPO / "src" / "hsicomp"
#: Stage of each package: a module may import its own stage and lower ones only.
STAGES = {"errors": 0, "progress": 0, "numba_cache": 0, "io": 0, "entropy": 1, "models": 2,
          "codecs": 3, "data": 4, "evaluation": 5, "figures": 6, "training": 7, "cli": 8}


def _stage(module: str) -> int:
    return STAGES[module.split(".")[1]]


def test_imports_point_down_the_stages():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module.count(".") == 0 or rel.parts[1] in ("__init__", "__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("hsicomp.") and _stage(name) > _stage(module):
                    wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_package_has_a_stage():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == set(STAGES)


def test_architecture_doc_names_every_module():
    """docs/architecture.md lists every module (or subpackage) of every stage."""
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = [f"{path.parent.name}/{path.name}" for path in sorted(SRC.glob("*/*"))
               if path.name not in ("__init__.py", "__pycache__")
               and (path.suffix == ".py" or (path / "__init__.py").exists())
               and f"{path.parent.name}/{path.name}" not in text
               and f"{path.parent.name}/{path.name}/" not in text]
    assert not missing, f"docs/architecture.md does not mention {', '.join(missing)}"
