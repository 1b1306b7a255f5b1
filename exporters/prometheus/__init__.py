"""The Prometheus scrape surface: the store's live series as Prometheus / OpenMetrics text (prometheus.md)."""
