"""The floor: the smallest useful OpenAI proxy (raw ASGI + one aiohttp session + orjson).

Not a product: a reference point measured by the same harness as the gateway, so the
gateway's overhead can be read as "floor + what Tollgate adds".

    MOCK_BASE_URL=http://127.0.0.1:28000/v1 uvicorn bench.floor_proxy:app --loop uvloop \
        --http httptools --no-access-log --no-proxy-headers --port 29200
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson

UPSTREAM = os.environ.get("MOCK_BASE_URL", "http://127.0.0.1:28000/v1") + "/chat/completions"


class FloorProxy:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        headers = {"content-type": "application/json", "authorization": "Bearer sk-mock-upstream"}
        upstream = await self.session.post(UPSTREAM, data=body, headers=headers)
        if request.get("stream"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            data = await upstream.read()
            orjson.loads(data)  # a real gateway reads usage from the answer
            length = str(len(data)).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", length)]})  # fmt: skip
            await send({"type": "http.response.body", "body": data})


app = FloorProxy()
