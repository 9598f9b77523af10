"""The llama-server family's serving code: llama.cpp server's own routes (tokenize,
detokenize)."""
