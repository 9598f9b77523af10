"""The OpenAI family's serving code: chat and text completions, embeddings and the model
list, from wire requests to engine requests and from engine events to OpenAI objects."""
