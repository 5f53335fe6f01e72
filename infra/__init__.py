"""Infrastructure: the local stack of real services and its health checks."""
