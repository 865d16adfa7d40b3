"""RouteIQ config-sync agent."""
