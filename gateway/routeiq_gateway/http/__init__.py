"""The HTTP edge: raw ASGI helpers (bounded body reads, whole responses) and OpenAI-style errors."""
