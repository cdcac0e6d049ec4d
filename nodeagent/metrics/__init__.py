"""Prometheus: the node's telemetry as a node_exporter textfile and, optionally, a /metrics endpoint."""
