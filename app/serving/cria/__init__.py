"""The CRIA family's serving code: the ``{"prompt"}`` frontend contract, health and the
model card."""
