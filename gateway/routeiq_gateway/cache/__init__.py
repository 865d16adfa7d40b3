"""The response cache: repeated requests answered without the upstream (litellm_settings.cache).

policy.py   what the config asks for (immutable, in the serving state)
controls.py what one request asks for (its body's `cache` object, LiteLLM's Cache-Control header)
key.py      the cache key: tenant, model group, endpoint, stream or not, the normalised request
entry.py    a stored answer's bytes (JSON body or the SSE events as sent)
lru.py      the bounded in-memory LRU (type local, and Redis's fallback)
redis_client.py  the one place the cache's Redis client is made
store.py    the runtime: Redis, the LRU, degraded mode, metrics (outlives reloads)
"""
