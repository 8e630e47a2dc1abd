"""Teams and virtual keys: the admin API, the `tollgate teams|keys` command, and persistence.

A key is shown once; the store keeps only its SHA-256. Each key maps its requests to its
team (visible in the ledger). Keys live in the SQLite file, so they survive a restart.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from openai import OpenAI

from tests.support.procs import Proc, admin, http, run_gateway

pytestmark = pytest.mark.e2e

MESSAGES: list[Any] = [{"role": "user", "content": "What does a gateway do?"}]
# A priced deployment (so the ledger shows a cost) served by the shared simulated provider.
SQLITE_CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o-mini:
    deployments:
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5,
          price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
"""


def _team(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _chat(gw: Proc, key: str, model: str = "gpt-4o-mini") -> str:
    """One chat request with `key`; returns the request id the gateway answered with."""
    with OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60.0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        assert raw.parse().choices[0].message.content
        return str(raw.headers["x-request-id"])


def _rejected(gw: Proc, key: str) -> openai.AuthenticationError:
    with OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=60.0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    return caught.value


def _ledger(gw: Proc) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for row in admin(gw, "GET", "/admin/ledger")["data"]}


def _cli(gw: Proc, *args: str, master_key: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gateway",
        *args,
        "--url",
        gw.url,
        "--master-key",
        master_key or gw.master_key,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _cli_json(gw: Proc, *args: str) -> Any:
    done = _cli(gw, *args)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


# -- the admin API ----------------------------------------------------------------------------


def test_admin_api_creates_lists_and_revokes(gateway: Proc) -> None:
    team = _team("api")
    created = admin(gateway, "POST", "/admin/teams", {"id": team})
    assert created["id"] == team and created["revoked"] is False
    assert team in {t["id"] for t in admin(gateway, "GET", "/admin/teams")["data"]}

    made = admin(gateway, "POST", "/admin/keys", {"team": team, "name": "backend"})
    key = made["key"]
    assert key.startswith("tg-") and len(key) > 30
    assert made["id"].startswith("key_")
    assert (made["team"], made["name"], made["revoked"]) == (team, "backend", False)
    assert made["preview"] == key[:7] + "..."

    listing = admin(gateway, "GET", f"/admin/keys?team={team}")["data"]
    assert [(k["id"], k["team"], k["name"], k["revoked"]) for k in listing] == [
        (made["id"], team, "backend", False)
    ]
    # Shown once: no listing ever carries the key itself.
    assert key not in orjson.dumps(listing).decode()
    assert key not in orjson.dumps(admin(gateway, "GET", "/admin/keys")).decode()

    _chat(gateway, key)
    revoked = admin(gateway, "DELETE", f"/admin/keys/{made['id']}")
    assert revoked["id"] == made["id"] and revoked["revoked"] is True
    assert admin(gateway, "GET", f"/admin/keys?team={team}")["data"][0]["revoked"] is True
    error = _rejected(gateway, key)
    assert error.status_code == 401
    assert key not in str(error.body), "the error echoes the whole key"


def test_revoking_a_team_revokes_its_keys(gateway: Proc) -> None:
    team = _team("gone")
    admin(gateway, "POST", "/admin/teams", {"id": team})
    keys = [admin(gateway, "POST", "/admin/keys", {"team": team})["key"] for _ in range(2)]
    for key in keys:
        _chat(gateway, key)

    assert admin(gateway, "DELETE", f"/admin/teams/{team}")["revoked"] is True

    for key in keys:
        assert _rejected(gateway, key).status_code == 401
    status, _, body = http("POST", gateway.url + "/admin/keys", body={"team": team},
                           headers={"authorization": f"Bearer {gateway.master_key}"})  # fmt: skip
    assert status == 404, body


def test_revoked_key_is_refused_on_the_anthropic_wire_too(gateway: Proc) -> None:
    team = _team("wire")
    admin(gateway, "POST", "/admin/teams", {"id": team})
    made = admin(gateway, "POST", "/admin/keys", {"team": team})
    with anthropic.Anthropic(base_url=gateway.url, api_key=made["key"], max_retries=0, timeout=60.0) as sdk:
        assert sdk.messages.create(model="gpt-4o-mini", max_tokens=64, messages=MESSAGES).content
        admin(gateway, "DELETE", f"/admin/keys/{made['id']}")
        with pytest.raises(anthropic.AuthenticationError) as caught:
            sdk.messages.create(model="gpt-4o-mini", max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.body["error"]["type"] == "authentication_error"


def test_each_key_maps_to_its_team(gateway: Proc) -> None:
    teams = [_team("a"), _team("b")]
    keys = {}
    for team in teams:
        admin(gateway, "POST", "/admin/teams", {"id": team})
        keys[team] = admin(gateway, "POST", "/admin/keys", {"team": team, "name": "svc"})
    request_ids = {team: [_chat(gateway, keys[team]["key"]) for _ in range(2)] for team in teams}

    ledger = _ledger(gateway)
    for team in teams:
        for request_id in request_ids[team]:
            row = ledger[request_id]
            assert row["team"] == team
            assert row["key_id"] == keys[team]["id"]
            assert row["requested_model"] == "gpt-4o-mini"
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0


def test_master_key_works_as_an_api_key(gateway: Proc) -> None:
    request_id = _chat(gateway, gateway.master_key)

    row = _ledger(gateway)[request_id]
    assert row["team"] == "master"


def test_admin_api_answers_only_to_the_master_key(gateway: Proc, api_key: str) -> None:
    status, _, body = http(
        "GET", gateway.url + "/admin/teams", headers={"authorization": f"Bearer {api_key}"}
    )
    assert status == 403, body
    assert body["error"]["type"] == "permission_error"

    status, _, body = http("GET", gateway.url + "/admin/keys")
    assert status == 401, body

    status, _, body = http(
        "GET", gateway.url + "/admin/ledger", headers={"authorization": "Bearer tg-not-a-key"}
    )
    assert status == 401, body


def test_admin_api_rejects_bad_input(gateway: Proc) -> None:
    headers = {"authorization": f"Bearer {gateway.master_key}"}
    status, _, body = http(
        "POST", gateway.url + "/admin/teams", body={"id": "no spaces allowed"}, headers=headers
    )
    assert status == 400 and body["error"]["param"] == "id", body

    team = _team("dup")
    admin(gateway, "POST", "/admin/teams", {"id": team})
    status, _, body = http("POST", gateway.url + "/admin/teams", body={"id": team}, headers=headers)
    assert status == 400 and body["error"]["code"] == "already_exists", body

    status, _, body = http(
        "POST", gateway.url + "/admin/keys", body={"team": "no-such-team"}, headers=headers
    )
    assert status == 404, body
    status, _, body = http("POST", gateway.url + "/admin/keys", body={}, headers=headers)
    assert status == 400 and body["error"]["param"] == "team", body
    status, _, body = http("DELETE", gateway.url + "/admin/keys/key_0000000000000000", headers=headers)
    assert status == 404, body


# -- the command line -------------------------------------------------------------------------


def test_cli_manages_teams_and_keys(gateway: Proc) -> None:
    team = _team("cli")
    assert _cli_json(gateway, "teams", "create", "--team", team)["id"] == team
    assert team in {t["id"] for t in _cli_json(gateway, "teams", "list")["data"]}

    made = _cli_json(gateway, "keys", "create", "--team", team, "--name", "backend")
    key, key_id = made["key"], made["id"]
    assert made["team"] == team and made["name"] == "backend"
    request_id = _chat(gateway, key)
    assert _ledger(gateway)[request_id]["team"] == team

    listed = _cli(gateway, "keys", "list", "--team", team)
    assert listed.returncode == 0, listed.stderr
    assert [k["id"] for k in orjson.loads(listed.stdout)["data"]] == [key_id]
    assert key not in listed.stdout

    assert _cli_json(gateway, "keys", "revoke", "--key-id", key_id)["revoked"] is True
    assert _rejected(gateway, key).status_code == 401

    assert _cli_json(gateway, "teams", "revoke", "--team", team)["revoked"] is True
    refused = _cli(gateway, "keys", "create", "--team", team)
    assert refused.returncode != 0
    assert "404" in refused.stderr and team in refused.stderr


def test_cli_reports_a_wrong_master_key_and_an_unreachable_gateway(gateway: Proc, tmp_path: Path) -> None:
    wrong = _cli(gateway, "teams", "list", master_key="tg-wrong")
    assert wrong.returncode != 0
    assert "401" in wrong.stderr
    assert wrong.stdout == ""

    dead = subprocess.run(
        [sys.executable, "-m", "gateway", "teams", "list", "--url", "http://127.0.0.1:9", "--master-key", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dead.returncode != 0
    assert "cannot reach the gateway" in dead.stderr


# -- persistence ------------------------------------------------------------------------------


def test_sqlite_keeps_keys_across_a_restart_and_stores_only_their_hash(sim: Proc, tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    config = SQLITE_CONFIG.format(db=db, sim=sim.url)
    with run_gateway(tmp_path, config) as first:
        admin(first, "POST", "/admin/teams", {"id": "kept"})
        kept = admin(first, "POST", "/admin/keys", {"team": "kept", "name": "survives"})
        dropped = admin(first, "POST", "/admin/keys", {"team": "kept", "name": "revoked"})
        admin(first, "DELETE", f"/admin/keys/{dropped['id']}")
        before = _chat(first, kept["key"])

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("keys.db*") if path.is_file())
    for made in (kept, dropped):
        assert made["key"].encode() not in stored, "a key's plaintext is in the database"
        assert hashlib.sha256(made["key"].encode()).hexdigest().encode() in stored

    with run_gateway(tmp_path, config) as second:
        assert second.url != first.url
        after = _chat(second, kept["key"])
        assert _rejected(second, dropped["key"]).status_code == 401
        ledger = _ledger(second)
        keys = admin(second, "GET", "/admin/keys?team=kept")["data"]

    assert ledger[before]["team"] == ledger[after]["team"] == "kept"
    assert ledger[before]["key_id"] == ledger[after]["key_id"] == kept["id"]
    assert {(k["id"], k["revoked"]) for k in keys} == {(kept["id"], False), (dropped["id"], True)}
