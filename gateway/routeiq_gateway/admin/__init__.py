"""The admin API: reload on demand and what the gateway serves now, behind ADMIN_API_KEYS (closed when unset)."""
