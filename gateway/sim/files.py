"""OpenAI's Files API for batches: `multipart/form-data` uploads and the file objects kept in memory.

The upload is parsed here (RFC 7578) rather than with python-multipart, which the project
does not depend on: a batch upload is two fields, `purpose` and `file`, read whole.
"""

from __future__ import annotations

import email.message
import email.utils
from dataclasses import dataclass

import orjson

from gateway.errors import InvalidRequest
from gateway.sim.batches import Clock, NoSuchObject
from gateway.sim.plan import random_id

# Upload purposes the simulator takes, and the one it gives the files a batch writes.
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"


@dataclass(slots=True, frozen=True)
class FormPart:
    name: str
    filename: str | None
    content: bytes


@dataclass(slots=True, frozen=True)
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def _header_params(name: str, value: str) -> email.message.Message:
    """A header parsed for its parameters (quoting and RFC 2231 `filename*` included)."""
    message = email.message.Message()
    message[name] = value
    return message


def _param(message: email.message.Message, header: str, key: str) -> str | None:
    value = message.get_param(key, header=header)
    if value is None:
        return None
    return email.utils.collapse_rfc2231_value(value)


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The fields of a `multipart/form-data` body by name; a 400 if it is not one."""
    header = _header_params("content-type", content_type)
    boundary = _param(header, "content-type", "boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Invalid Content-Type header (expected multipart/form-data with a boundary); "
            f"got {content_type or 'none'!r}.",
            param="content-type",
        )
    delimiter = b"--" + boundary.encode("latin-1")
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
    params = _header_params("content-disposition", disposition)
    name = _param(params, "content-disposition", "name")
    if name is None:
        return None
    return FormPart(name, _param(params, "content-disposition", "filename"), content)


class FileStore:
    """Files by id, in upload order."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._files: dict[str, SimFile] = {}

    def add(self, filename: str, purpose: str, content: bytes) -> SimFile:
        file = SimFile("file-" + random_id(length=22), filename, purpose, content, int(self._clock()))
        self._files[file.id] = file
        return file

    def upload(self, form: dict[str, FormPart]) -> SimFile:
        """`POST /v1/files`: a batch input file, checked as OpenAI checks it at upload."""
        purpose_part, file_part = form.get("purpose"), form.get("file")
        if purpose_part is None:
            raise InvalidRequest(
                "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if file_part is None or file_part.filename is None:
            raise InvalidRequest(
                "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        purpose = purpose_part.content.decode("utf-8", "replace").strip()
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid value: {purpose!r}. Supported values are: 'batch' (the simulator keeps batch "
                "input files only).",
                param="purpose",
                code="invalid_value",
            )
        if not _starts_as_jsonl(file_part.content):
            raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl", param="file")
        return self.add(file_part.filename or "upload", purpose, file_part.content)

    def get(self, file_id: str) -> SimFile:
        file = self._files.get(file_id)
        if file is None:
            raise NoSuchObject(f"No such File object: {file_id}", param="id")
        return file

    def find(self, file_id: str) -> SimFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> dict[str, object]:
        self.get(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def newest_first(self, purpose: str | None = None) -> list[SimFile]:
        return [f for f in reversed(self._files.values()) if purpose is None or f.purpose == purpose]


def _starts_as_jsonl(content: bytes) -> bool:
    """OpenAI refuses a batch upload whose first line is not a JSON object; later lines are
    checked when a batch uses the file (and fail the batch, line by line)."""
    first = content.lstrip().split(b"\n", 1)[0]
    try:
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False
