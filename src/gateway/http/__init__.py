"""The HTTP layer: the only place that knows FastAPI. Routes validate and hand off to the service."""
