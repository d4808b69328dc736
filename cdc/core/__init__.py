"""Settings, the error tree, the shared models and every generated name."""
