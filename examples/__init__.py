"""Small programs that use the provider: `python -m examples.resource_server`."""
