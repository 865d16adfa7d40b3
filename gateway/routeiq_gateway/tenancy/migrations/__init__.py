"""Versioned schema migrations: `NNNN_name.sql`, applied in order by `routeiq-gateway db upgrade` (migrate.py)."""
