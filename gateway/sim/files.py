"""OpenAI's Files API for batches on the simulator: the file objects, kept in memory.

An upload (`multipart/form-data`, read by gateway.wire.multipart) is two fields, `purpose`
and `file`, checked as OpenAI checks a batch input file at upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import InvalidRequest
from gateway.sim.batches import Clock, NoSuchObject
from gateway.sim.plan import random_id
from gateway.wire.batch_input import starts_as_jsonl
from gateway.wire.multipart import FormPart, required

# Upload purposes the simulator takes, and the one it gives the files a batch writes.
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"


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
        purpose_part, file_part = required(form, "purpose"), required(form, "file", file=True)
        purpose = purpose_part.text()
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"Invalid value: {purpose!r}. Supported values are: 'batch' (the simulator keeps batch "
                "input files only).",
                param="purpose",
                code="invalid_value",
            )
        if not starts_as_jsonl(file_part.content):
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
