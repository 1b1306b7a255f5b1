"""The built-in web UI at /ui/ (issue 18): static ES modules served from this package, built only on
otelite's public HTTP APIs, plus the one endpoint it needed that did not exist (GET /api/whoami)."""
