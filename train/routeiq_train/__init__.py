"""routeiq-train: train, evaluate and publish RouteIQ's learned routers (a separate package so the gateway image
stays small)."""
