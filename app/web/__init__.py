"""The offline demo chat page: static files served by the app itself (no CDN, no build step)."""
