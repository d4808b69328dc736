"""The `cdc` command line: thin layer over cdc.mirrors."""
