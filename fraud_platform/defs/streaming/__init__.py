"""The stream path: the stream worker as an observable asset with its lag and freshness."""
