"""The online store in Redis: ``layout`` (keys, encoding), ``writer`` (snapshots), ``reader``."""
