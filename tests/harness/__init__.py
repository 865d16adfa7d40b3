"""Test harness: real processes over loopback (fake LLM provider, moto S3, redis-server, OTLP receiver,
the gateway). Importable as `harness` because tests/conftest.py puts tests/ on sys.path."""
