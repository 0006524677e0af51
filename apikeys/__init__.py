"""API keys for the program and metrics routes (``server.auth: true`` or ``DSPY_AUTH=true``)."""
