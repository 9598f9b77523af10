"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``): the request
rewritten for the shared kernels (``convert``, ``plan``), the reply as Anthropic's events and
message (``events``)."""
