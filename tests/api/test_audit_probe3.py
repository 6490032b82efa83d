from __future__ import annotations
import re
from tests.api.rooms_support import ROOMS_CONFIG
from tests.api.conftest import MakeClient


async def test_probe3(make_client: MakeClient) -> None:
    client = await make_client(ROOMS_CONFIG)
    out = []
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if not path:
            continue
        concrete = re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: {"roomId": "!r:localhost", "userId": "@u:localhost", "eventId": "$e", "roomIdOrAlias": "!r:localhost", "roomAlias": "#a:localhost"}.get(m.group(1), "x"), path)
        for route in resource:
            if route.method in ("HEAD", "OPTIONS", "*"):
                continue
            r = await client.request(route.method, concrete, data=b"{}")
            r2 = await client.request(route.method, concrete, data=b"{}", headers={"Authorization": "Bearer nope"})
            b = await r.text(); b2 = await r2.text()
            out.append(f"{route.method} {path} -> {r.status} {b[:80]} | bad token {r2.status} {b2[:60]}")
    open("/tmp/audit/probe3.txt", "w").write("\n".join(out))
