"""Routing records: one per routed request, spooled on the run volume, shipped to the object store in batches;
and the feedback clients send about a request (`POST /v1/feedback`), recorded beside them."""
