"""Measurement: Prometheus metrics and OpenTelemetry spans."""
