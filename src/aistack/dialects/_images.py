"""Images on the wire: what the dialects share about them."""

from __future__ import annotations


def sniff_mime(b64: str) -> str:
    """Ollama images carry no type; the first bytes tell the common ones."""
    head = b64[:16]
    if head.startswith("iVBORw0KGgo"):
        return "image/png"
    if head.startswith("/9j/"):
        return "image/jpeg"
    if head.startswith("UklGR"):
        return "image/webp"
    if head.startswith("R0lGOD"):
        return "image/gif"
    return "image/png"
