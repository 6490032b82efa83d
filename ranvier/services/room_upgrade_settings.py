"""A user's own settings follow them into an upgraded room (Client-Server API,
"Room Upgrades", Server behaviour: "When a user joins the new room, the server
should automatically transfer/replicate some of the user's personalized
settings such as notifications, tags, etc.").

What moves, as Synapse does: the room's tags (``m.tag`` room account data),
the room's place in ``m.direct``, and the user's push rules about the room
(the ``room`` rule whose ID is the room's, and override/underride/content
rules whose ID names the room, their conditions re-pointed). Nothing already
set for the new room is overwritten, so joining again changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.core.auth_rules import CREATE_KEY
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

TAGS = "m.tag"
DIRECT = "m.direct"
#: Push rule kinds that may name a room (Client-Server API, "Push Rules").
ROOM_RULE_KINDS: tuple[str, ...] = ("override", "room", "underride", "content")


async def predecessor_of(hs: Homeserver, room_id: str) -> str | None:
    """The room ``room_id`` replaces (its create event's ``predecessor``), if any."""
    ids = await hs.rooms.events.current_state_ids(room_id, [CREATE_KEY])
    create_id = ids.get(CREATE_KEY)
    stored = await hs.rooms.events.get_event(create_id) if create_id else None
    if stored is None:
        return None
    predecessor = stored.event.content.get("predecessor")
    if not isinstance(predecessor, dict):
        return None
    old_room_id = predecessor.get("room_id")
    return old_room_id if isinstance(old_room_id, str) and old_room_id != room_id else None


async def transfer_user_settings(
    hs: Homeserver, user_id: str, old_room_id: str, new_room_id: str
) -> None:
    await _copy_tags(hs, user_id, old_room_id, new_room_id)
    await _extend_direct(hs, user_id, old_room_id, new_room_id)
    await _copy_push_rules(hs, user_id, old_room_id, new_room_id)


async def _copy_tags(hs: Homeserver, user_id: str, old_room_id: str, new_room_id: str) -> None:
    tags = await hs.account_data.get_account_data(user_id, old_room_id, TAGS)
    if not tags or await hs.account_data.get_account_data(user_id, new_room_id, TAGS):
        return
    await hs.account_data.set_server_managed(user_id, new_room_id, TAGS, tags)


async def _extend_direct(hs: Homeserver, user_id: str, old_room_id: str, new_room_id: str) -> None:
    """m.direct: the new room joins every DM list the old room is in."""
    direct = await hs.account_data.get_account_data(user_id, None, DIRECT)
    if not direct:
        return
    changed: dict[str, Any] = {}
    for other, rooms in direct.items():
        if isinstance(rooms, list) and old_room_id in rooms and new_room_id not in rooms:
            changed[other] = [*rooms, new_room_id]
    if changed:
        await hs.account_data.set_server_managed(user_id, None, DIRECT, {**direct, **changed})


async def _copy_push_rules(
    hs: Homeserver, user_id: str, old_room_id: str, new_room_id: str
) -> None:
    ruleset = await hs.push_rules.get_ruleset(user_id)
    for kind in ROOM_RULE_KINDS:
        for rule in ruleset.rules.get(kind, ()):
            if rule.default or old_room_id not in rule.rule_id:
                continue
            new_rule_id = rule.rule_id.replace(old_room_id, new_room_id)
            if ruleset.get(kind, new_rule_id) is not None:
                continue
            body = _repointed(rule.to_json(), old_room_id, new_room_id)
            try:
                await hs.push_rules.set_rule(user_id, kind, new_rule_id, body)
                if not rule.enabled:
                    await hs.push_rules.set_enabled(user_id, kind, new_rule_id, False)
            except MatrixError:
                continue  # a rule this server would not accept any more: left behind


def _repointed(rule: dict[str, Any], old_room_id: str, new_room_id: str) -> dict[str, Any]:
    """The setPushRule body of ``rule`` with conditions on the old room moved to the new."""
    body: dict[str, Any] = {"actions": rule["actions"]}
    if "pattern" in rule:
        body["pattern"] = rule["pattern"]
    if "conditions" in rule:
        body["conditions"] = [
            {**condition, "pattern": new_room_id}
            if condition.get("key") == "room_id" and condition.get("pattern") == old_room_id
            else condition
            for condition in rule["conditions"]
        ]
    return body
