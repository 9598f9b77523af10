"""``cria serve``: configure logging, resolve the model, and run uvicorn on the app.

Startup logging is split by who knows what: this module logs the request (settings, the
model file and what its GGUF header says); the app's lifespan logs what the engine decided
once the model is loaded (offload: backend, device, layers on GPU, any fallback).

Shutdown drains: the first SIGTERM/SIGINT keeps the port open while new requests get 503
and running ones finish (up to ``--shutdown-timeout``); only then does uvicorn stop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from types import FrameType

import uvicorn

from app.api.app import create_app
from app.api.runtime import EngineRuntime
from app.api.security import WILDCARD_BINDS
from app.front_door import guarded_protocol
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
    if settings.host.strip() in WILDCARD_BINDS and "*" not in settings.allowed_host:
        logger.info(
            "Host check: answering localhost, IP addresses and single-label host names; "
            "add DNS names clients use with --allowed-host (or '*' to accept any)."
        )
    if not settings.api_key and not _is_loopback(settings.host):
        logger.warning(
            "Bound to %s without an API key: anyone who can reach this port can use the model. "
            "Set --api-key (or CRIA_API_KEY) to require one.",
            settings.host,
        )


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain between the exit signal and uvicorn's own shutdown.

    uvicorn stops listening at the first signal (new clients would get "connection
    refused", not a 503) and sse-starlette ends every stream then; so the first signal only
    starts ``EngineRuntime.drain`` and the exit comes when it is done. A second signal exits
    at once (the lifespan stop still ends the streams cleanly); a third SIGINT forces it.
    Signals are not re-raised after the drain, so the process exits 0.
    """

    def __init__(self, config: uvicorn.Config, runtime: EngineRuntime, timeout_s: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None and self._loop is not None and not self.should_exit:
            logger.info("received %s: shutting down gracefully", signal.Signals(sig).name)
            self._loop.call_soon_threadsafe(self._start_drain)
        elif self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.runtime.drain(self.timeout_s)
        finally:
            self.should_exit = True


def serve(settings: Settings) -> int:
    """Run the server until interrupted (then drain); returns the exit status.

    Raises ``ModelNotFound``/``ModelLoadError`` (the CLI prints them) before binding.
    """
    configure_logging(settings.log_level, settings.log_format)
    model_path = resolve_model(settings.model, settings.models_dir)
    settings = settings.model_copy(update={"model": str(model_path)})
    _log_startup(settings, read_gguf(model_path))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our handler (configure_logging) formats uvicorn's records too
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request with tokens and timings
        timeout_graceful_shutdown=5,  # after the drain: only responses still being written
        # The front door (app/front_door.py): head cap and timeouts for httptools, the same
        # head cap for h11, and a cap on open connections (503 beyond it).
        http=guarded_protocol(
            max_header_bytes=settings.max_header_bytes,
            head_timeout_s=settings.header_timeout,
            body_timeout_s=settings.body_timeout,
        ),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_connections,
    )
    DrainingServer(config, app.state.runtime, settings.shutdown_timeout).run()
    return 0
