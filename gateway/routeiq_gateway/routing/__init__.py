"""Routing: deployments and their provider path, virtual models chosen by learned routers, and the live swap
of verified router models."""
