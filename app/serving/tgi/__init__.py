"""The TGI family's serving code: ``/generate`` plans, token events and answers, ``/info``."""
