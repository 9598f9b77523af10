"""Model files: references (path, name, hf://, built-in), the GGUF header reader, the CLI."""
