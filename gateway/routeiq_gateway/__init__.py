"""RouteIQ gateway: an OpenAI-compatible API in front of LiteLLM's providers, with a fast native path."""
