"""``cria serve``: configure logging, resolve the model, and run uvicorn on the app.

Startup logging is split by who knows what: this module logs the request (settings, the
model file and what its GGUF header says); the app's lifespan logs what the engine decided
once the model is loaded (offload: backend, device, layers on GPU, any fallback).
"""

from __future__ import annotations

import ipaddress
import logging

from app.logging_setup import configure_logging
from app.models.gguf import GGUFInfo, read_gguf
from app.models.registry import resolve_model
from app.settings import Settings

logger = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_startup(settings: Settings, info: GGUFInfo) -> None:
    logger.info(
        "Model %s: %s, %s, %.0fM parameters, %.1f MiB, trained context %s",
        info.path,
        info.architecture,
        info.quantization,
        info.n_params / 1e6,
        info.size_bytes / 1_048_576,
        info.context_length,
        extra={"model": str(info.path), "quantization": info.quantization},
    )
    logger.info(
        "Engine settings: %d slots x %d context tokens, batch %d, threads %s, "
        "n_gpu_layers=%s, KV cache %s, queue limit %d",
        settings.parallel,
        settings.ctx_size,
        settings.batch_size,
        settings.threads or "auto",
        settings.n_gpu_layers,
        settings.kv_cache_type,
        settings.max_queue,
    )
    auth = f"{len(settings.api_key)} API key(s)" if settings.api_key else "no API key"
    logger.info("Listening on http://%s:%d (%s)", settings.host, settings.port, auth)
    if not settings.api_key and not _is_loopback(settings.host):
        logger.warning(
            "Bound to %s without an API key: anyone who can reach this port can use the model. "
            "Set --api-key (or CRIA_API_KEY) to require one.",
            settings.host,
        )


def serve(settings: Settings) -> int:
    """Run the server until interrupted; returns the exit status.

    Raises ``ModelNotFound``/``ModelLoadError`` (the CLI prints them) before binding.
    """
    configure_logging(settings.log_level, settings.log_format)
    model_path = resolve_model(settings.model, settings.models_dir)
    settings = settings.model_copy(update={"model": str(model_path)})
    _log_startup(settings, read_gguf(model_path))

    import uvicorn

    from app.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our handler (configure_logging) formats uvicorn's records too
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request with tokens and timings
        timeout_graceful_shutdown=5,
    )
    return 0
