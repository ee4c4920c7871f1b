"""Feature store: registry, offline computation, point-in-time joins, online store."""
