"""Read a policy document (a mapping, a YAML or a JSON file) into `Policies`.

Every error names the dotted path of the bad key, e.g.
`teams.research.budgets[0].amount_usd: Input should be greater than 0`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.model import Policies


class PolicyError(ValueError):
    """A policy document that cannot be used; the message names each bad key's dotted path."""


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-*" for c in part):
            path += f".{part}" if path else part
        else:
            # A key with dots or spaces (a model such as claude-3.5) stays one readable segment.
            path += f"[{json.dumps(part)}]"
    return path


def describe_validation_error(err: ValidationError) -> str:
    """One line per error, each naming its dotted path (`teams.research.budgets[0].period: ...`)."""
    lines = []
    for error in err.errors():
        loc = _dotted(tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{loc}: {message}" if loc else message)
    return "\n".join(lines)


def load_policies(data: Mapping[str, Any] | None) -> Policies:
    """Validate a parsed policy document; an empty one holds no limits at all."""
    try:
        return Policies.model_validate(dict(data) if data is not None else {})
    except ValidationError as err:
        raise PolicyError(describe_validation_error(err)) from None


_TOP_LEVEL = "a mapping with `teams:` and/or `default:`"


def read_policy_document(path: str | Path, *, top_level: str = _TOP_LEVEL) -> dict[str, Any]:
    """A policy file's document: a `.json` file is read as JSON, anything else as YAML (of
    which JSON is a subset); an empty file is an empty document. `top_level` says what the
    document must be, in the error for one that is not a mapping."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise PolicyError(f"cannot read policies {file}: {err.strerror}") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if file.suffix == ".json" else "YAML"
        raise PolicyError(f"{file}: not valid {kind}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PolicyError(f"{file}: the top level must be {top_level}")
    return dict(data)


def policies_from_file(path: str | Path) -> Policies:
    return load_policies(read_policy_document(path))
