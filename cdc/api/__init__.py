"""The REST API (FastAPI): thin layer over cdc.mirrors."""
