"""Wire schemas (pydantic v2, OpenAI names), separate from the engine's own types."""
