"""Clients for the remote systems cdc drives: Kafka Connect, Flink (SQL Gateway and
JobManager REST) and Pinot (controller and broker).

Each client translates transport and HTTP failures into the cdc.core.errors tree in one place
(cdc.clients.http), so nothing above this package ever sees a `requests` exception.
"""

from cdc.clients.http import HttpClient, scrub

__all__ = ["HttpClient", "scrub"]
