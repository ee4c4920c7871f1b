"""The stream path: a Quix Streams worker that keeps the online store current from the topics.

``plan`` derives what to maintain from the feature registry, ``store`` keeps each entity's
events in Redis, ``processor`` computes rows with the batch code (``compute.py``) and writes
them through the online writer, ``app`` wires it into a Quix Streams application.
"""
