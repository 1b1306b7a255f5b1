"""What the forwarding exporters (otlp, otlphttp, prometheusremotewrite) share: the Collector's client
settings (TLS, retry_on_failure, sending_queue) and the durable queue that sends what the store committed
(queue.py)."""
