"""The OpenAI Responses family (``/v1/responses``): input items -> the shared chat kernels,
engine output -> output items, stream events and stored responses."""
