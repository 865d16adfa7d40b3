"""RouteIQ's common library: only what at least two services use."""
