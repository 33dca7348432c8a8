"""pipetrack's Prometheus exporter: reads the canonical record and serves run-state metrics."""
