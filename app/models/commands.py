"""``cria models pull|list|rm``: the CLI's model management commands (print is allowed here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.models.pull import pull
from app.models.registry import LocalModel, list_models, remove_model, resolve_model


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _row(model: LocalModel) -> dict[str, str | int]:
    info = model.info
    return {
        "name": model.name,
        "size_bytes": model.size_bytes,
        "size": _size(model.size_bytes),
        "quantization": info.quantization if info else "-",
        "architecture": info.architecture if info else "-",
        "parameters": info.n_params if info else 0,
        "path": str(model.path),
        "error": model.error or "",
    }


def cmd_pull(args: argparse.Namespace, models_dir: Path) -> int:
    """Download (or find) a model and print where it is."""
    if args.ref.startswith(("http://", "https://")):  # as Ollama's /api/pull takes them
        path = pull(args.ref, models_dir, lambda _: None)
    else:
        path = resolve_model(args.ref, models_dir, download=True)
    print(path)
    return 0


def cmd_list(args: argparse.Namespace, models_dir: Path) -> int:
    """Print the models in the models folder as a table (or JSON with --json)."""
    rows = [_row(m) for m in list_models(models_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No models in {models_dir}. Try: cria models pull smollm2")
        return 0
    cols = ("name", "size", "quantization", "architecture", "path")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        line = "  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip()
        print(line + (f"  (invalid: {r['error']})" if r["error"] else ""))
    return 0


def cmd_rm(args: argparse.Namespace, models_dir: Path) -> int:
    """Delete a model file from the models folder."""
    print(f"Removed {remove_model(args.name, models_dir)}")
    return 0


def add_models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``models`` command and its sub-commands."""
    models = sub.add_parser("models", help="Download, list and remove model files.")
    models.add_argument(
        "--models-dir",
        type=Path,
        help="Models folder (default: CRIA_MODELS_DIR, else <repo>/models).",
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pull = actions.add_parser(
        "pull",
        help="Fetch a model: smollm2, hf://owner/repo/file.gguf, an http(s) URL of a .gguf "
        "file, a name or a path.",
    )
    pull.add_argument("ref", help="Model reference.")
    pull.set_defaults(models_handler=cmd_pull)
    lst = actions.add_parser("list", help="List models: name, size, quantization, architecture.")
    lst.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    lst.set_defaults(models_handler=cmd_list)
    rm = actions.add_parser("rm", help="Delete a model file from the models folder.")
    rm.add_argument("name", help="Model name (as `cria models list` shows it) or built-in name.")
    rm.set_defaults(models_handler=cmd_rm)
