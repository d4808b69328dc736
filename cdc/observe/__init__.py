"""Metrics, probes and logs."""
