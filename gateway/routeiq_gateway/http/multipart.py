"""multipart/form-data, as OpenAI's audio uploads send it: parsed from a body already read within the limit, and
encoded again (with `model` rewritten) for the upstream.

Only what uploads use: one level of parts, each with a Content-Disposition naming it; a part with a filename is
an Upload, any other a UTF-8 text field. Anything else is refused with a 400 naming what is wrong.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from routeiq_gateway.http.errors import GatewayError

MAX_PARTS = 64  # an upload form has a handful of fields; thousands of tiny parts are not an upload


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


def _refuse(why: str) -> GatewayError:
    return GatewayError(400, f"Request body is not valid multipart/form-data: {why}", code="invalid_multipart")


def boundary_of(content_type: bytes | None) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type; 400 for any other type."""
    if content_type is None:
        raise GatewayError(
            400, "This endpoint takes multipart/form-data (an audio file upload).", code="invalid_content_type"
        )
    kind, _, params = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        raise GatewayError(
            400, "This endpoint takes multipart/form-data (an audio file upload).", code="invalid_content_type"
        )
    for param in params.split(b";"):
        key, _, value = param.strip().partition(b"=")
        if key.lower() == b"boundary":
            value = value.strip().strip(b'"')
            if 0 < len(value) <= 200:
                return value
    raise _refuse("the Content-Type has no boundary")


def _disposition(line: bytes) -> dict[str, str]:
    """Content-Disposition parameters: name="…"; filename="…" (quoted values may hold ';')."""
    out: dict[str, str] = {}
    text = line.decode("utf-8", "replace")
    _, _, rest = text.partition(";")
    while rest:
        rest = rest.lstrip(" ;\t")
        key, eq, rest = rest.partition("=")
        if not eq:
            break
        if rest.startswith('"'):
            end = rest.find('"', 1)
            while end > 0 and rest[end - 1] == "\\":
                end = rest.find('"', end + 1)
            if end < 0:
                raise _refuse("an unterminated quoted parameter in Content-Disposition")
            value, rest = rest[1:end], rest[end + 1 :]
        else:
            value, _, rest = rest.partition(";")
        out[key.strip().lower()] = value.strip()
    return out


def parse_form(raw: bytes, content_type: bytes | None) -> dict[str, Any]:
    """Form fields by name: str for text fields, Upload for files. The last of a repeated name wins."""
    boundary = boundary_of(content_type)
    delimiter = b"--" + boundary
    start = raw.find(delimiter)
    if start < 0:
        raise _refuse("the boundary does not occur in the body")
    fields: dict[str, Any] = {}
    pos = start + len(delimiter)
    for _ in range(MAX_PARTS + 1):
        if raw.startswith(b"--", pos):
            return fields  # the closing delimiter
        if not raw.startswith(b"\r\n", pos):
            raise _refuse("a delimiter is not followed by CRLF")
        end = raw.find(b"\r\n" + delimiter, pos + 2)
        if end < 0:
            raise _refuse("the body ends before the closing boundary")
        head, sep, data = raw[pos + 2 : end].partition(b"\r\n\r\n")
        if not sep:
            raise _refuse("a part has no blank line after its headers")
        disposition: dict[str, str] | None = None
        part_type = "application/octet-stream"
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-disposition":
                disposition = _disposition(value)
            elif name.strip().lower() == b"content-type":
                part_type = value.strip().decode("latin-1")
        if disposition is None or not disposition.get("name"):
            raise _refuse("a part has no Content-Disposition with a name")
        field = disposition["name"]
        if "filename" in disposition:
            fields[field] = Upload(disposition["filename"] or "upload", part_type, data)
        else:
            try:
                fields[field] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _refuse(f"the text field '{field}' is not UTF-8") from None
        pos = end + 2 + len(delimiter)
    raise _refuse(f"more than {MAX_PARTS} parts")


def _quoted(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ").encode()


def encode_form(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """(body, content type) for the fields: a fresh random boundary, which no field can contain by chance."""
    boundary = b"routeiq-" + secrets.token_hex(16).encode()
    out: list[bytes] = []
    for name, value in fields.items():
        out.append(b"--" + boundary + b"\r\n")
        if isinstance(value, Upload):
            out.append(
                b'Content-Disposition: form-data; name="' + _quoted(name) + b'"; filename="'
                + _quoted(value.filename) + b'"\r\nContent-Type: ' + _quoted(value.content_type) + b"\r\n\r\n"
            )  # fmt: skip
            out.append(value.data)
        else:
            out.append(b'Content-Disposition: form-data; name="' + _quoted(name) + b'"\r\n\r\n')
            out.append(str(value).encode())
        out.append(b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    return b"".join(out), b"multipart/form-data; boundary=" + boundary
