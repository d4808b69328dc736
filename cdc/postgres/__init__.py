"""Everything that talks to a source Postgres: catalog, preflight, slots."""
