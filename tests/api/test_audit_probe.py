"""Temporary audit probes."""
from __future__ import annotations
import json
from typing import Any
from tests.api.rooms_support import V3, call, create_room, join, make_user, put_state, q, send
from tests.api.sync_support import MakeSyncClient, get, make_sync_client_fixture, messages, sync, bodies  # noqa: F401


async def raw(client, method, path, user=None, data=None, params=None):
    headers = dict(user.headers) if user else {}
    r = await client.request(method, V3 + path, data=data, headers=headers, params=params)
    try:
        body = await r.json()
    except Exception:
        body = await r.text()
    return r.status, body


async def test_probe(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room = await create_room(client, alice, preset="public_chat")
    room2 = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room)
    await send(client, alice, room, {"msgtype": "m.text", "body": "a1"}, "t1")
    await send(client, bob, room, {"msgtype": "m.text", "body": "b1"}, "t2")
    await send(client, alice, room, {"msgtype": "m.image", "body": "img", "url": "mxc://x/y"}, "t3")
    await send(client, alice, room2, {"msgtype": "m.text", "body": "r2"}, "t4")
    out = []
    def rec(name, v):
        out.append(f"{name}: {v}")
    for f in [
        {"room": {"timeline": {"not_senders": [bob.user_id]}}},
        {"room": {"timeline": {"senders": [bob.user_id]}}},
        {"room": {"timeline": {"contains_url": True}}},
        {"room": {"timeline": {"contains_url": False}}},
        {"room": {"timeline": {"limit": 1}}},
        {"room": {"timeline": {"rooms": [room2]}}},
        {"room": {"timeline": {"not_rooms": [room2]}}},
        {"room": {"rooms": [room2]}},
        {"room": {"not_rooms": [room2]}},
        {"room": {"timeline": {"types": ["m.room.message"]}}},
    ]:
        s = await sync(client, alice, filter=f)
        rec(json.dumps(f), {r[:6]: bodies(v["timeline"]["events"]) for r, v in s["rooms"]["join"].items()})
    for f in [
        {"not_senders": [bob.user_id]}, {"senders": [bob.user_id]}, {"contains_url": True},
        {"contains_url": False}, {"limit": 1}, {"rooms": [room2]}, {"not_rooms": [room]}, {"types": ["m.room.message"]},
        {"lazy_load_members": True},
    ]:
        st, b = await messages(client, alice, room, dir="b", filter=f)
        rec("messages " + json.dumps(f), (st, bodies(b.get("chunk", [])) if st == 200 else b, len(b.get("chunk", [])), [e["type"] for e in b.get("state", [])] if st==200 else None))
    # bad inputs
    rec("put state array", await raw(client, "PUT", f"/rooms/{q(room)}/state/m.room.topic/", alice, data=b"[1]"))
    rec("put state string", await raw(client, "PUT", f"/rooms/{q(room)}/state/m.room.topic/", alice, data=b'"x"'))
    rec("send array", await raw(client, "PUT", f"/rooms/{q(room)}/send/m.room.message/x1", alice, data=b"[1]"))
    rec("send notjson", await raw(client, "PUT", f"/rooms/{q(room)}/send/m.room.message/x2", alice, data=b"{"))
    rec("send bad room", await raw(client, "PUT", f"/rooms/{q('nope')}/send/m.room.message/x3", alice, data=b"{}"))
    rec("send unknown room", await raw(client, "PUT", f"/rooms/{q('!nope:localhost')}/send/m.room.message/x3", alice, data=b"{}"))
    rec("join bad alias", await raw(client, "POST", f"/join/{q('#')}", alice, data=b"{}"))
    rec("join bad id", await raw(client, "POST", f"/join/{q('xyz')}", alice, data=b"{}"))
    rec("messages huge limit", (await messages(client, alice, room, dir="b", limit=10**30))[0])
    rec("messages neg limit", await messages(client, alice, room, dir="b", limit=-5))
    rec("messages limit 0", await messages(client, alice, room, dir="b", limit=0))
    rec("messages bad dir", await messages(client, alice, room, dir="x"))
    rec("messages bad from", await messages(client, alice, room, dir="b", **{"from": "zzz"}))
    rec("messages huge from", await messages(client, alice, room, dir="b", **{"from": "t" + "9"*30}))
    rec("context huge limit", await get(client, f"{V3}/rooms/{q(room)}/context/{q('$x')}", alice, limit=10**30))
    rec("sync bad timeout", await get(client, f"{V3}/sync", alice, timeout="abc"))
    rec("sync huge timeout", (await get(client, f"{V3}/sync", alice, timeout=10**30))[0])
    rec("ts huge", await get(client, f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event", alice, ts=10**30, dir="b"))
    rec("ts neg", await get(client, f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event", alice, ts=-1, dir="f"))
    rec("members bad at", await get(client, f"{V3}/rooms/{q(room)}/members", alice, at="zz"))
    rec("members huge at", await get(client, f"{V3}/rooms/{q(room)}/members", alice, at="t" + "9" * 30))
    rec("members at s token huge", await get(client, f"{V3}/rooms/{q(room)}/members", alice, at="s" + "9" * 30))
    rec("event bad id", await get(client, f"{V3}/rooms/{q(room)}/event/{q('zz')}", alice))
    rec("carol event", await get(client, f"{V3}/rooms/{q(room)}/event/{q('$zz')}", carol))
    rec("carol state", await get(client, f"{V3}/rooms/{q(room)}/state", carol))
    rec("carol messages", await messages(client, carol, room, dir="b"))
    rec("carol members", await get(client, f"{V3}/rooms/{q(room)}/members", carol))
    rec("typing bad", await raw(client, "PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}", alice, data=b'{"typing": true, "timeout": "x"}'))
    rec("typing huge", await raw(client, "PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}", alice, data=json.dumps({"typing": True, "timeout": 10**30}).encode()))
    rec("receipt bad thread", await raw(client, "POST", f"/rooms/{q(room)}/receipt/m.read/{q('$x')}", alice, data=b'{"thread_id": 5}'))
    rec("receipt private thread main", await raw(client, "POST", f"/rooms/{q(room)}/receipt/m.read.private/{q('$x')}", alice, data=b'{"thread_id": "main"}'))
    rec("filter get other", await raw(client, "GET", f"/user/{q(bob.user_id)}/filter/0", alice))
    rec("account data other", await raw(client, "GET", f"/user/{q(bob.user_id)}/account_data/x", alice))
    rec("presence bad", await raw(client, "PUT", f"/presence/{q(alice.user_id)}/status", alice, data=b'{"presence": "x"}'))
    rec("profile bad", await raw(client, "PUT", f"/profile/{q(alice.user_id)}/displayname", alice, data=b'{"displayname": 5}'))
    rec("big event", await raw(client, "PUT", f"/rooms/{q(room)}/send/m.room.message/big", alice, data=json.dumps({"body": "x" * 70000}).encode()))
    rec("big state", await raw(client, "PUT", f"/rooms/{q(room)}/state/m.room.topic/", alice, data=json.dumps({"topic": "x" * 70000}).encode()))
    rec("createRoom bad preset", await raw(client, "POST", "/createRoom", alice, data=b'{"preset": "x"}'))
    rec("createRoom bad version", await raw(client, "POST", "/createRoom", alice, data=b'{"room_version": "99"}'))
    rec("createRoom invite bad", await raw(client, "POST", "/createRoom", alice, data=b'{"invite": ["x"]}'))
    rec("createRoom initial_state bad", await raw(client, "POST", "/createRoom", alice, data=b'{"initial_state": [{"type": 5}]}'))
    rec("createRoom pl override bad", await raw(client, "POST", "/createRoom", alice, data=b'{"power_level_content_override": {"users": 5}}'))
    rec("alias put bad", await raw(client, "PUT", f"/directory/room/{q('#a:localhost')}", alice, data=b'{"room_id": 5}'))
    rec("alias put badroom", await raw(client, "PUT", f"/directory/room/{q('#a:localhost')}", alice, data=b'{"room_id": "!nope:localhost"}'))
    rec("alias get bad", await raw(client, "GET", f"/directory/room/{q('nope')}", alice))
    rec("canonical alias bad", await raw(client, "PUT", f"/rooms/{q(room)}/state/m.room.canonical_alias/", alice, data=b'{"alias": "#nope:localhost"}'))
    rec("kick missing user_id", await raw(client, "POST", f"/rooms/{q(room)}/kick", alice, data=b'{}'))
    rec("versions", await raw(client, "GET", "/../versions"))
    open("/tmp/audit/probe1.txt", "w").write("\n".join(out))
