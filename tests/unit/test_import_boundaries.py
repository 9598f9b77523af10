"""Architecture rules, checked by walking the imports with ast.

Only app/engine/llama/ imports llama_cpp; the engine never imports the web stack.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
LLAMA_PKG = APP / "engine" / "llama"
WEB_STACK = {"fastapi", "starlette", "sse_starlette", "uvicorn"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_the_walk_finds_the_app_and_sees_imports() -> None:
    files = python_files(APP)
    assert APP / "engine" / "service.py" in files
    assert "app" in imported_modules(APP / "engine" / "service.py")


def test_only_engine_llama_imports_llama_cpp() -> None:
    offenders = [
        str(path.relative_to(APP))
        for path in python_files(APP)
        if not path.is_relative_to(LLAMA_PKG) and "llama_cpp" in imported_modules(path)
    ]
    assert offenders == []


def test_engine_never_imports_the_web_stack() -> None:
    offenders = {
        str(path.relative_to(APP)): sorted(imported_modules(path) & WEB_STACK)
        for path in python_files(APP / "engine")
        if imported_modules(path) & WEB_STACK
    }
    assert offenders == {}


def test_engine_does_not_import_the_layers_above_it() -> None:
    above = ("app.api", "app.serving", "app.web", "app.schemas")
    offenders = []
    for path in python_files(APP / "engine"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            if mod.startswith(above):
                offenders.append(f"{path.relative_to(APP)}: {mod}")
    assert offenders == []
