"""Dispatch: the attempt plan over a group's deployments, retries with backoff, fallbacks."""
