"""cdc: keep live Apache Pinot upsert mirrors of PostgreSQL tables."""

__version__ = "0.1.0"
