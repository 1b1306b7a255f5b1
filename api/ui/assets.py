"""The UI's files, read once from the package's `static/` folder at start.

Only the files found there are ever served (looked up by name in a dict, never joined onto a
filesystem path), each with its content type, a strong ETag and a gzip copy made once, so a request
costs a dict look-up and no disk access.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# Text compresses; PNG does not.
_COMPRESSIBLE = {".html", ".js", ".css", ".svg", ".LICENSE", ".txt"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    suffix = path.suffix
    gzipped = gzip.compress(body, 9, mtime=0) if suffix in _COMPRESSIBLE else None
    return Asset(body, gzipped, CONTENT_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def load(root: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under `root` by its relative POSIX path (`app.js`, `vendor/uPlot.esm.js`)."""
    return {p.relative_to(root).as_posix(): _asset(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in CONTENT_TYPES}


def page_weight_gzip(assets: dict[str, Asset]) -> int:
    """Bytes on the wire (gzip) of everything the app loads: HTML, JS and CSS (issue 18: < 300 KB)."""
    return sum(len(a.gzipped) for name, a in assets.items()
               if a.gzipped is not None and name.rsplit(".", 1)[-1] in ("html", "js", "css"))
