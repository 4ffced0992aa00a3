"""multipart/form-data bodies built byte by byte: the app's uploads, and the odd ones no library would send."""

from __future__ import annotations

from dataclasses import dataclass

BOUNDARY = "hostile-corpus-3f9c2b7e51d04a68"  # fixed, so a body is the same bytes on every run


@dataclass(frozen=True)
class Part:
    """One multipart part. `filename` is raw bytes so that non-UTF-8 names can be sent; None sends a plain field."""

    field: str
    data: bytes
    filename: bytes | None = b"photo.jpg"
    content_type: str | None = "image/jpeg"
    extra_headers: tuple[str, ...] = ()


def multipart(parts: list[Part], close: bool = True) -> tuple[bytes, str]:
    """The body and its Content-Type; `close=False` leaves out the closing boundary (a truncated upload)."""
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.field}"'.encode()
        if part.filename is not None:
            disposition += b'; filename="' + part.filename + b'"'
        headers = [b"Content-Disposition: " + disposition]
        if part.content_type is not None:
            headers.append(f"Content-Type: {part.content_type}".encode())
        headers += [header.encode() for header in part.extra_headers]
        chunks.append(f"--{BOUNDARY}\r\n".encode() + b"\r\n".join(headers) + b"\r\n\r\n" + part.data + b"\r\n")
    if close:
        chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={BOUNDARY}"
