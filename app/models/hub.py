"""Hugging Face hub references: ``hf://owner/repo/path/to/file.gguf[@revision]``.

Downloads go through ``huggingface_hub.hf_hub_download`` straight into the models folder
(its own progress bar, resumable). ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` are
read when a download happens, not at import, so they work however the process was started.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from app.errors import ModelNotFound

logger = logging.getLogger(__name__)

HF_SCHEME = "hf://"


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf://`` reference."""

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}/{self.filename}{rev}"


def is_hub_ref(ref: str) -> bool:
    return ref.startswith(HF_SCHEME)


def parse_hub_ref(ref: str) -> HubRef:
    """Split ``hf://owner/repo/file.gguf[@rev]``; raise ``ModelNotFound`` if malformed."""
    body, _, revision = ref.removeprefix(HF_SCHEME).partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 3 or not parts[-1].endswith(".gguf") or ".." in parts:
        raise ModelNotFound(
            f"{ref!r} is not a valid hub reference; use hf://owner/repo/file.gguf "
            "(optionally ending in @revision)."
        )
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


def offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_hub(ref: HubRef, models_dir: Path, *, download: bool = True) -> Path:
    """The local copy of ``ref`` in ``models_dir``, downloading it if allowed and missing.

    A file already in the models folder is used without asking the hub (offline demos).
    """
    local = Path(models_dir) / ref.filename
    if local.is_file():
        return local
    offline_now = offline() or not download
    where = f"{local} (offline)" if offline_now else f"the hub ({ref})"
    try:
        path = hf_hub_download(
            ref.repo_id,
            ref.filename,
            revision=ref.revision,
            local_dir=models_dir,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            token=os.environ.get("HF_TOKEN") or None,
            local_files_only=offline_now,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ModelNotFound(
            f"model {ref} is not in {models_dir} and downloads are off "
            "(HF_HUB_OFFLINE is set or download disabled). Fetch it with "
            f"`cria models pull {ref}` on a machine online, or copy the file to {local}."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise ModelNotFound(
            f"model {ref} was not found on {where}: {type(exc).__name__}. Check the owner, "
            "repository and file name (and HF_TOKEN for gated or private repositories)."
        ) from exc
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise ModelNotFound(
            f"could not download {ref} from {where}: {exc}. Check the network, HF_ENDPOINT "
            f"and HF_TOKEN, or copy the file to {local}."
        ) from exc
    logger.info("Downloaded %s to %s", ref, path)
    return Path(path)
