"""pipetrack's live monitor: web pages (and their JSON twins) that show every pipeline.

    pipetrack ui                 # http://127.0.0.1:8480/, read-only, from the configured database

Served by the exporter's HTTP server (exporter/_server.py: TLS, basic auth, timeouts), by
``pipetrack ui`` on its own port and by ``pipetrack exporter`` beside /metrics. Every view
reads through ``monitor.queries``, as the terminal views do.
"""

from __future__ import annotations
