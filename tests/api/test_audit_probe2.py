"""Temporary audit probes 2."""
from __future__ import annotations
import asyncio, json, time
from tests.api.rooms_support import V3, call, create_room, join, make_user, put_state, q, send, hs_of
from tests.api.sync_support import MakeSyncClient, get, make_sync_client_fixture, messages, sync, bodies  # noqa: F401


async def test_probe2(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    out = []
    def rec(name, v):
        out.append(f"{name}: {v}")
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room = await create_room(client, alice, preset="public_chat")
    _, e0 = await send(client, alice, room, {"msgtype": "m.text", "body": "before-bob"}, "t0")
    s0 = await sync(client, alice)
    tok_before_bob = s0["next_batch"]
    await put_state(client, alice, room, "m.room.history_visibility", "", {"history_visibility": "joined"})
    await join(client, bob, room)
    _, e1 = await send(client, alice, room, {"msgtype": "m.text", "body": "bob-in"}, "t1")
    rec("bob members at before join", await get(client, f"{V3}/rooms/{q(room)}/members", bob, at=tok_before_bob))
    rec("bob context e0", (await get(client, f"{V3}/rooms/{q(room)}/context/{q(e0['event_id'])}", bob))[0])
    rec("bob event e0", (await get(client, f"{V3}/rooms/{q(room)}/event/{q(e0['event_id'])}", bob))[0])
    st, b = await messages(client, bob, room, dir="b")
    rec("bob messages", bodies(b["chunk"]))
    rec("bob ts_to_event 0 f", await get(client, f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event", bob, ts=0, dir="f"))
    # bob leaves; alice sends more; bob reads
    await call(client, "POST", f"/rooms/{q(room)}/leave", bob, {})
    _, e2 = await send(client, alice, room, {"msgtype": "m.text", "body": "after-bob-left"}, "t2")
    await put_state(client, alice, room, "m.room.topic", "", {"topic": "secret topic"})
    rec("bob event e2", (await get(client, f"{V3}/rooms/{q(room)}/event/{q(e2['event_id'])}", bob))[0])
    rec("bob context e2", (await get(client, f"{V3}/rooms/{q(room)}/context/{q(e2['event_id'])}", bob))[0])
    st, b = await messages(client, bob, room, dir="b")
    rec("bob messages after leave", bodies(b["chunk"]))
    st, b = await messages(client, bob, room, dir="f")
    rec("bob messages f after leave", bodies(b["chunk"]))
    s = await sync(client, alice)
    rec("bob members at now", [(e["state_key"], e["content"]["membership"]) for e in (await get(client, f"{V3}/rooms/{q(room)}/members", bob, at=s["next_batch"]))[1].get("chunk", [])])
    st, state = await get(client, f"{V3}/rooms/{q(room)}/state", bob)
    rec("bob state after leave has topic", any(e["type"] == "m.room.topic" for e in state))
    rec("bob state topic", (await get(client, f"{V3}/rooms/{q(room)}/state/m.room.topic", bob)))
    # world readable without joining
    wr = await create_room(client, alice, preset="public_chat", initial_state=[{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}])
    await send(client, alice, wr, {"msgtype": "m.text", "body": "wr1"}, "w1")
    st, b = await messages(client, carol, wr, dir="b")
    rec("carol wr messages", (st, bodies(b.get("chunk", []))))
    rec("carol wr state", (await get(client, f"{V3}/rooms/{q(wr)}/state", carol))[0])
    rec("carol wr members", (await get(client, f"{V3}/rooms/{q(wr)}/members", carol))[0])
    rec("carol wr joined_members", (await get(client, f"{V3}/rooms/{q(wr)}/joined_members", carol)))
    # non-world-readable room, carol never in it
    rec("carol room aliases", (await get(client, f"{V3}/rooms/{q(room)}/aliases", carol)))
    rec("carol ts", (await get(client, f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event", carol, ts=0, dir="f")))
    # invited visibility
    inv = await create_room(client, alice, preset="private_chat")
    await put_state(client, alice, inv, "m.room.history_visibility", "", {"history_visibility": "invited"})
    await send(client, alice, inv, {"msgtype": "m.text", "body": "pre-invite"}, "i0")
    await call(client, "POST", f"/rooms/{q(inv)}/invite", alice, {"user_id": carol.user_id})
    await send(client, alice, inv, {"msgtype": "m.text", "body": "post-invite"}, "i1")
    st, b = await messages(client, carol, inv, dir="b")
    rec("carol invited messages (not joined)", (st, b))
    await join(client, carol, inv)
    st, b = await messages(client, carol, inv, dir="b")
    rec("carol invited messages after join", (st, bodies(b.get("chunk", []))))
    # typing expiry
    await join(client, bob, room)
    s = await sync(client, bob)
    st, _ = await call(client, "PUT", f"/rooms/{q(room)}/typing/{q(alice.user_id)}", alice, {"typing": True, "timeout": 100})
    s2 = await sync(client, bob, since=s["next_batch"])
    rec("typing on", s2["rooms"]["join"].get(room, {}).get("ephemeral"))
    # advance fake clock so timer expiry? clock is fake: check real timer
    clock = hs_of(client).clock_ms
    t0 = time.monotonic()
    s3 = await sync(client, bob, since=s2["next_batch"], timeout=3000)
    rec("typing long poll returned after", (round(time.monotonic() - t0, 2), s3["rooms"]["join"].get(room, {}).get("ephemeral")))
    open("/tmp/audit/probe2.txt", "w").write("\n".join(map(str, out)))
