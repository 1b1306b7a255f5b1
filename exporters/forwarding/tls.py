"""TLS for the forwarders' clients from `tls:` (config.TLSClientConfig)."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from otelite.exporters.forwarding.config import TLSClientConfig


def ssl_context(tls: TLSClientConfig) -> ssl.SSLContext:
    """For the HTTP exporters (https:// endpoints)."""
    ctx = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def grpc_credentials(tls: TLSClientConfig) -> grpc.ChannelCredentials:
    """For the otlp exporter when it uses TLS."""
    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(root_certificates=read(tls.ca_file), private_key=read(tls.key_file),
                                        certificate_chain=read(tls.cert_file))
