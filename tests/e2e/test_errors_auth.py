"""What a client sees when its key is missing, wrong or revoked, or not allowed where it knocks."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import openai
import pytest

from tests.support.procs import Proc, admin, http
from tests.support.wire_errors import anthropic_error, openai_error

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "hi"}]
MISSING_KEY = "Missing API key. Pass it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')."
BODIES = {
    "/v1/chat/completions": {"model": "gpt-4o", "messages": HI},
    "/v1/completions": {"model": "gpt-4o", "prompt": "hi"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
}


def new_key(gateway: Proc) -> tuple[str, str, str]:
    """A fresh team with one key: (team, key id, plaintext key)."""
    team = f"errors-{uuid.uuid4().hex[:8]}"
    admin(gateway, "POST", "/admin/teams", {"id": team})
    created = admin(gateway, "POST", "/admin/keys", {"team": team, "name": "errors"})
    return team, created["id"], created["key"]


def sdk(gateway: Proc, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0, timeout=10)


@pytest.mark.parametrize(("path", "body"), BODIES.items())
def test_missing_key_is_401(gateway: Proc, path: str, body: dict[str, Any]) -> None:
    status, _, answer = http("POST", gateway.url + path, body=body)
    assert status == 401
    assert answer == openai_error(MISSING_KEY, type="invalid_request_error", code="missing_api_key")


def test_missing_key_on_messages_is_401_in_anthropic_shape(gateway: Proc) -> None:
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": HI}
    status, _, answer = http("POST", gateway.v1 + "/messages", body=body)
    assert (status, answer) == (401, anthropic_error(MISSING_KEY, "authentication_error"))


def test_wrong_key_is_401_without_echoing_the_key(gateway: Proc) -> None:
    wrong = "tg-" + uuid.uuid4().hex * 2
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, wrong).chat.completions.create(model="gpt-4o", messages=HI)
    err = caught.value
    assert (err.status_code, err.code) == (401, "invalid_api_key")
    assert (
        err.body
        == openai_error(
            f"Incorrect API key provided: tg-****{wrong[-4:]}.",
            type="invalid_request_error",
            code="invalid_api_key",
        )["error"]
    )
    assert wrong[3:-4] not in str(err.body)


def test_wrong_key_on_messages_is_anthropic_authentication_error(gateway: Proc) -> None:
    wrong = "sk-ant-" + uuid.uuid4().hex
    client = anthropic.Anthropic(base_url=gateway.url, api_key=wrong, max_retries=0, timeout=10)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="gpt-4o", max_tokens=5, messages=HI)
    assert caught.value.status_code == 401
    message = f"Incorrect API key provided: sk-****{wrong[-4:]}."
    assert caught.value.body == anthropic_error(message, "authentication_error")


def test_revoked_key_is_401(gateway: Proc) -> None:
    _, key_id, key = new_key(gateway)
    client = sdk(gateway, key)
    assert client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2).choices
    assert admin(gateway, "DELETE", f"/admin/keys/{key_id}")["revoked"] is True
    # The e2e gateway trusts a verified key for 0 s (auth cache_ttl_s): revocation is immediate.
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body["message"] == f"Incorrect API key provided: tg-****{key[-4:]}."


def test_key_of_a_revoked_team_is_401_even_once_the_team_is_recreated(gateway: Proc) -> None:
    team, key_id, key = new_key(gateway)
    client = sdk(gateway, key)
    assert client.embeddings.create(model="text-embedding-3-small", input="hi").data
    assert admin(gateway, "DELETE", f"/admin/teams/{team}")["revoked"] is True
    with pytest.raises(openai.AuthenticationError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert caught.value.code == "invalid_api_key"
    # The team's keys are revoked with it, and say so ...
    listed = admin(gateway, "GET", f"/admin/keys?team={team}")["data"]
    assert [(k["id"], k["revoked"]) for k in listed] == [(key_id, True)]
    # ... so a team created again under the same id does not bring them back.
    admin(gateway, "POST", "/admin/teams", {"id": team})
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="text-embedding-3-small", input="hi")


def test_admin_api_with_a_team_key_is_403(gateway: Proc, api_key: str) -> None:
    expected = openai_error(
        "The admin API requires the master key.", type="permission_error", code="permission_denied"
    )
    bearer = {"authorization": f"Bearer {api_key}"}
    assert http("GET", gateway.url + "/admin/teams", headers=bearer)[::2] == (403, expected)
    assert http("GET", gateway.url + "/admin/ledger", headers=bearer)[::2] == (403, expected)
    created = http("POST", gateway.url + "/admin/keys", body={"team": "e2e"}, headers=bearer)
    assert created[::2] == (403, expected)


def test_admin_api_without_a_key_is_401(gateway: Proc) -> None:
    status, _, answer = http("GET", gateway.url + "/admin/keys")
    assert status == 401
    assert answer == openai_error(MISSING_KEY, type="invalid_request_error", code="missing_api_key")


def test_model_list_with_a_wrong_key_is_401(gateway: Proc) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(gateway, "tg-not-a-key-at-all").models.list()
    assert caught.value.body["message"] == "Incorrect API key provided: tg-****-all."
