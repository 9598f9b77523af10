"""Entry point for uvicorn's ``--factory`` flag: settings from ``CRIA_*`` env (and a file).

``python -m uvicorn --factory app.api.main:create_app_from_env`` runs the server the way
the tests do; ``cria serve`` is the user-facing way.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from app.api.app import create_app
from app.logging_setup import configure_logging
from app.settings import load_settings


def create_app_from_env() -> FastAPI:
    """The app for the settings in the environment, with logging configured from them."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # The app logs one line per request (with tokens); uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").propagate = False
    return create_app(settings)
