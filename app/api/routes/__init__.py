"""Route modules, one per family; handler names follow OpenAI's operation names."""
