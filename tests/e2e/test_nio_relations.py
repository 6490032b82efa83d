"""A matrix-nio bot answers in a thread, edits its answer, reacts and replies,
through a real `ranvier serve` (SQLite and PostgreSQL); a second nio client
then sees the thread summary and the edit bundle in its /sync (Client-Server
API, "Threading", "Event replacements", "Annotations", "Rich replies")."""

from __future__ import annotations

from typing import Any

import pytest
from nio import AsyncClient, JoinResponse, RoomCreateResponse, RoomSendResponse, SyncResponse

from tests.e2e.test_nio_chat import _registered, server_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


async def _send(client: AsyncClient, room_id: str, content: dict[str, Any], kind: str) -> str:
    response = await client.room_send(room_id, kind, content)
    assert isinstance(response, RoomSendResponse), response
    return response.event_id


def _timeline(sync: SyncResponse, room_id: str) -> dict[str, dict[str, Any]]:
    return {event.event_id: event.source for event in sync.rooms.join[room_id].timeline.events}


async def test_nio_bot_threads_edits_reactions_replies(server_url: str) -> None:  # noqa: F811
    alice = await _registered(server_url, "alice")
    bot = await _registered(server_url, "helpbot")
    try:
        created = await alice.room_create(name="support")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await alice.room_invite(room_id, bot.user_id)
        assert isinstance(await bot.join(room_id), JoinResponse)

        question = await _send(
            alice, room_id, {"msgtype": "m.text", "body": "my printer is on fire"}, "m.room.message"
        )
        answer = await _send(
            bot,
            room_id,
            {
                "msgtype": "m.text",
                "body": "have you tried water?",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": question,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": question},
                },
            },
            "m.room.message",
        )
        fixed = {"msgtype": "m.text", "body": "please do not use water"}
        edit = await _send(
            bot,
            room_id,
            {
                "msgtype": "m.text",
                "body": "* please do not use water",
                "m.new_content": fixed,
                "m.relates_to": {"rel_type": "m.replace", "event_id": answer},
            },
            "m.room.message",
        )
        await _send(
            bot,
            room_id,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": question, "key": "🔥"}},
            "m.reaction",
        )
        reply = await _send(
            bot,
            room_id,
            {
                "msgtype": "m.text",
                "body": "> my printer is on fire\n\nticket opened",
                "m.relates_to": {"m.in_reply_to": {"event_id": question}},
            },
            "m.room.message",
        )

        # A second client of alice's, fresh: its first /sync bundles what happened.
        second = AsyncClient(server_url, alice.user_id)
        try:
            login = await second.login("alice-password-1", device_name="second")
            assert second.access_token, login
            synced = await second.sync(
                timeout=0, full_state=True, sync_filter={"room": {"timeline": {"limit": 30}}}
            )
            assert isinstance(synced, SyncResponse), synced
        finally:
            await second.close()
        events = _timeline(synced, room_id)
        root = events[question]
        assert root["content"]["body"] == "my printer is on fire"
        thread = root["unsigned"]["m.relations"]["m.thread"]
        assert thread["count"] == 1
        assert thread["current_user_participated"] is True  # alice sent the root
        latest = thread["latest_event"]
        assert latest["event_id"] == answer
        assert latest["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit
        assert "m.annotation" not in root["unsigned"]["m.relations"]  # not bundled (v1.7)

        answered = events[answer]
        assert answered["content"]["body"] == "have you tried water?"  # not replaced (v1.7)
        bundled_edit = answered["unsigned"]["m.relations"]["m.replace"]
        assert bundled_edit["event_id"] == edit
        assert bundled_edit["content"]["m.new_content"] == fixed
        assert events[reply]["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": question}}
        assert "m.relations" not in events[reply]["unsigned"]

        # The bot reads its threads back through /relations.
        fetched = await bot.room_get_event(room_id, question)
        assert fetched.event.event_id == question  # type: ignore[union-attr]
        response = await bot.client_session.get(  # type: ignore[union-attr]
            f"{server_url}/_matrix/client/v1/rooms/{room_id}/relations/{question}/m.thread",
            headers={"Authorization": f"Bearer {bot.access_token}"},
        )
        body = await response.json()
        assert response.status == 200, body
        assert [event["event_id"] for event in body["chunk"]] == [answer]
    finally:
        await alice.close()
        await bot.close()
