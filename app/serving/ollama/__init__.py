"""The Ollama family's serving code: ``/api/chat`` and ``/api/generate`` plans and NDJSON
lines, embeddings, and the model library views (tags, show, ps, version)."""
