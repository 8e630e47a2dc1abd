"""`multipart/form-data` (RFC 7578), as `POST /v1/files` receives it: a few fields read whole.

The gateway's Files API and the simulated provider's both read uploads with this parser.
Starlette's `request.form()` needs python-multipart, which the project does not depend on; an
upload is two to four small fields and one file, so a small parser over the whole body does.
"""

from __future__ import annotations

import email.message
import email.utils
from dataclasses import dataclass

from gateway.errors import InvalidRequest


@dataclass(slots=True, frozen=True)
class FormPart:
    name: str
    filename: str | None
    content: bytes

    def text(self) -> str:
        return self.content.decode("utf-8", "replace").strip()


def _params(header: str, value: str) -> email.message.Message:
    """A header parsed for its parameters (quoting and RFC 2231 `filename*` included)."""
    message = email.message.Message()
    message[header] = value
    return message


def _param(message: email.message.Message, header: str, key: str) -> str | None:
    value = message.get_param(key, header=header)
    return None if value is None else email.utils.collapse_rfc2231_value(value)


def boundary_of(content_type: str) -> bytes:
    """The delimiter of a `multipart/form-data` body; a 400 when the content type is another."""
    header = _params("content-type", content_type)
    boundary = _param(header, "content-type", "boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Invalid Content-Type header: expected multipart/form-data with a boundary, "
            f"got {content_type or 'none'!r}.",
            param="content-type",
        )
    return b"--" + boundary.encode("latin-1")


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The fields of the body by name (the first of a repeated name wins)."""
    delimiter = boundary_of(content_type)
    # Every delimiter but a leading one follows a CRLF, which belongs to the delimiter.
    text = b"\r\n" + body
    separator = b"\r\n" + delimiter
    at = text.find(separator)
    parts: dict[str, FormPart] = {}
    while at >= 0:
        at += len(separator)
        if text.startswith(b"--", at):
            return parts  # the close delimiter
        line_end = text.find(b"\r\n", at)
        end = text.find(separator, line_end + 2) if line_end >= 0 else -1
        if end < 0:
            break
        part = _part(text[line_end + 2 : end])
        if part is not None:
            parts.setdefault(part.name, part)
        at = end
    raise InvalidRequest("Malformed multipart/form-data body: no closing boundary.", param="file")


def required(form: dict[str, FormPart], name: str, *, file: bool = False) -> FormPart:
    """The field `name` of the form (with `file`, an uploaded file: one that has a filename);
    a 400 in OpenAI's words when it is missing."""
    part = form.get(name)
    if part is None or (file and part.filename is None):
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    return part


def _part(raw: bytes) -> FormPart | None:
    head, found, content = raw.partition(b"\r\n\r\n")
    if not found:
        if not raw.startswith(b"\r\n"):
            return None
        head, content = b"", raw[2:]
    disposition = ""
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            disposition = value.strip()
    params = _params("content-disposition", disposition)
    name = _param(params, "content-disposition", "name")
    if name is None:
        return None
    return FormPart(name, _param(params, "content-disposition", "filename"), content)
