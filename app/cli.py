"""The ``cria`` command line: ``serve``, ``models pull|list|rm`` and ``settings``.

``cria serve`` has one flag per settings field, generated from the pydantic model (the
field description is the help text), so a new setting is a flag, an environment variable
and a config-file key at once. Flags > ``CRIA_*`` environment > ``--config`` file > defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from app.errors import DownloadFailed, InvalidRequest, ModelLoadError, ModelNotFound
from app.models.commands import add_models_parser
from app.settings import SECRET_FIELDS, ConfigFileError, Settings, field_docs, load_settings
from app.settings import settings_table_markdown as settings_table

logger = logging.getLogger("app.cli")

CONFIG_ENV = "CRIA_CONFIG"


def _scalar_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; ``list[str]`` -> ``str``; anything else unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    return annotation


def _flag_kwargs(field: FieldInfo) -> dict[str, Any]:
    """argparse keyword arguments for one settings field."""
    annotation = field.annotation
    base = _scalar_type(annotation)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    kwargs: dict[str, Any] = {"action": "append" if typing.get_origin(annotation) is list else None}
    if typing.get_origin(base) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(base))
    elif base in (int, float):
        kwargs["type"] = base
    kwargs["metavar"] = "PATH" if base is Path else None
    return {k: v for k, v in kwargs.items() if v is not None}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; only flags actually given reach the settings."""
    group = parser.add_argument_group("settings (flag > CRIA_* environment > config file)")
    docs = {d.name: d for d in field_docs()}
    for name, field in Settings.model_fields.items():
        doc = docs[name]
        repeat = " Repeatable." if typing.get_origin(field.annotation) is list else ""
        text = f"{doc.description}{repeat} [default: {doc.default}; env: {doc.env}]"
        group.add_argument(
            doc.flag,
            dest=name,
            default=argparse.SUPPRESS,
            help=text.replace("%", "%%"),
            **_flag_kwargs(field),
        )


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML file of settings (keys are the setting names) [env: {CONFIG_ENV}]",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole ``cria`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cria", description="cria-server: a local LLM API server (OpenAI-compatible, SSE)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="Serve a model over HTTP (default: smollm2 on 127.0.0.1:8000).",
        description="Serve a model over HTTP. With no arguments: the built-in smollm2 model "
        "(fetched first if missing) on http://127.0.0.1:8000.",
    )
    _add_config_flag(serve)
    add_settings_flags(serve)
    serve.set_defaults(handler=cmd_serve)
    add_models_parser(sub)
    show = sub.add_parser("settings", help="Print the effective settings (keys masked).")
    _add_config_flag(show)
    add_settings_flags(show)
    show.add_argument("--markdown", action="store_true", help="Print the settings table instead.")
    show.set_defaults(handler=cmd_settings)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags (only those given), the environment and --config."""
    flags = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    config = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    return load_settings(flags, Path(config) if config else None)


def cmd_settings(args: argparse.Namespace) -> int:
    """Print the settings as TOML (what a config file would hold), or the markdown table."""
    if args.markdown:
        print(settings_table(), end="")
        return 0
    for name, value in settings_from_args(args).model_dump(mode="json").items():
        shown = ["***"] * len(value) if name in SECRET_FIELDS else value
        if shown is not None:
            print(f"{name} = {_toml_value(shown)}")
    return 0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (presets); TOML has no null: None is left out
        items = [
            f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None
        ]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_serve(args: argparse.Namespace) -> int:
    """Resolve the model (fetching it if needed) and run the HTTP server."""
    from app.serve import serve  # uvicorn and the app are only imported to serve

    return serve(settings_from_args(args))


def _models_dir(args: argparse.Namespace) -> Path:
    given = getattr(args, "models_dir", None)
    return load_settings({"models_dir": given} if given else {}).models_dir


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        return int(args.models_handler(args, _models_dir(args)))
    return int(args.handler(args))


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        flag = "--" + "-".join(str(p) for p in err["loc"][:1]).replace("_", "-")
        lines.append(f"{flag}: {err['msg']} (got {err.get('input')!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cria`` and ``python -m app``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigFileError, ValidationError) as exc:
        text = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"cria: {text}", file=sys.stderr)
        return 2
    except (ModelNotFound, ModelLoadError, DownloadFailed, InvalidRequest) as exc:
        print(f"cria: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cria: interrupted", file=sys.stderr)
        return 130
