"""Sources and mirrors: the service functions, registry, reconciler, operations, verify."""
