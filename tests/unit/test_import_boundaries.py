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


# The layers, bottom up: a module may import its own package and the layers below it, never
# one above (`cli -> serve -> api -> serving -> engine/models -> schemas -> limits -> errors`).
LAYERS: dict[str, int] = {
    "app": 0,  # the package's own __init__ (a docstring)
    "app.errors": 0,
    "app.limits": 1,  # the table of request limits (raises app.errors)
    "app.schemas": 2,
    "app.engine": 3,
    "app.models": 3,
    "app.settings": 4,
    "app.serving": 5,
    "app.web": 6,
    "app.logging_setup": 6,
    "app.api": 7,
    "app.front_door": 8,
    "app.serve": 9,
    "app.cli": 10,
    "app.__main__": 11,
}
SERVING_FAMILIES = ("openai", "anthropic", "ollama", "tgi", "cria", "llama", "responses")


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = APP.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str:
    """The entry of LAYERS that ``module`` belongs to."""
    if module == "app":
        return module
    for name in sorted(LAYERS, key=len, reverse=True):
        if name != "app" and (module == name or module.startswith(name + ".")):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def app_imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """The ``app.*`` modules ``path`` imports (without TYPE_CHECKING blocks if asked)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(child) for child in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "app":
                # ``from app.pkg import module`` depends on that module, not on the package.
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "app"}
    return found


def test_every_import_goes_down_the_layers() -> None:
    upward = []
    for path in python_files(APP):
        here = module_name(path)
        mine = layer_of(here)
        for target in app_imports(path):
            theirs = layer_of(target)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{here} -> {target}")
    assert upward == []


def test_serving_families_share_kernels_not_each_other() -> None:
    crossing = []
    for family in SERVING_FAMILIES:
        for path in python_files(APP / "serving" / family):
            for target in app_imports(path):
                other = target.split(".")[2] if target.startswith("app.serving.") else None
                if other in SERVING_FAMILIES and other != family:
                    crossing.append(f"{module_name(path)} -> {target}")
    assert crossing == []


def test_the_modules_import_no_circle() -> None:
    modules = {module_name(path): path for path in python_files(APP)}
    graph = {
        name: {t for t in app_imports(path, runtime_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    done: set[str] = set()
    trail: list[str] = []

    def visit(name: str) -> None:
        if name in trail:
            raise AssertionError("import circle: " + " -> ".join([*trail, name]))
        if name in done:
            return
        trail.append(name)
        for target in sorted(graph[name]):
            visit(target)
        trail.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
