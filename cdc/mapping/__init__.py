"""Pure functions: Postgres types -> Debezium -> Flink -> Pinot, canonical values, rendered artifacts."""
