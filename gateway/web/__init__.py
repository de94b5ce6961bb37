"""Local web: status page, JSON API, /metrics, /healthz."""
