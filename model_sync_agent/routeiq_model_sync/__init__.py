"""RouteIQ model-sync agent."""
