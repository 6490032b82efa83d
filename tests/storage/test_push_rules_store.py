"""PushRulesStore on both engines."""

from __future__ import annotations

from ranvier.core.push_rules import DefaultRuleOverride, PushRule
from ranvier.storage import Database
from ranvier.storage.push_rules import PushRulesStore

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def _rule(kind: str, rule_id: str, **fields: object) -> PushRule:
    return PushRule(kind=kind, rule_id=rule_id, actions=("notify",), **fields)  # type: ignore[arg-type]


async def test_rules_round_trip_in_priority_order(database: Database) -> None:
    store = PushRulesStore(database)
    conditions = ({"kind": "event_property_is", "key": "content.m\\.x", "value": None},)
    async with database.transaction() as txn:
        await store.put_rule(txn, ALICE, _rule("override", "b", conditions=conditions), ["b"])
        await store.put_rule(txn, ALICE, _rule("override", "a"), ["a", "b"])
        await store.put_rule(txn, ALICE, _rule("content", "c", pattern="cake*"), ["c"])
        await store.put_rule(txn, BOB, _rule("override", "z"), ["z"])
    assert await store.rule_ids(database, ALICE, "override") == ["a", "b"]
    rules = await store.user_rules(database, ALICE)
    assert rules == [
        PushRule("content", "c", ("notify",), pattern="cake*"),
        PushRule("override", "a", ("notify",)),
        PushRule("override", "b", ("notify",), conditions=conditions),
    ]
    assert [rule.rule_id for rule in await store.user_rules(database, BOB)] == ["z"]


async def test_put_existing_rule_replaces_body_keeps_enabled(database: Database) -> None:
    store = PushRulesStore(database)
    async with database.transaction() as txn:
        await store.put_rule(txn, ALICE, _rule("override", "a"), ["a"])
        await store.put_rule(txn, ALICE, _rule("override", "b"), ["b", "a"])
        assert await store.set_enabled(txn, ALICE, "override", "a", False)
    async with database.transaction() as txn:
        replacement = PushRule("override", "a", (), conditions=({"kind": "x"},))
        await store.put_rule(txn, ALICE, replacement, ["a", "b"])
    rules = await store.user_rules(database, ALICE)
    assert rules[0] == PushRule("override", "a", (), enabled=False, conditions=({"kind": "x"},))
    assert [rule.rule_id for rule in rules] == ["a", "b"]


async def test_enable_actions_delete(database: Database) -> None:
    store = PushRulesStore(database)
    async with database.transaction() as txn:
        await store.put_rule(txn, ALICE, _rule("room", "!r:x"), ["!r:x"])
        assert await store.set_actions(txn, ALICE, "room", "!r:x", [{"set_tweak": "sound"}])
        assert not await store.set_actions(txn, ALICE, "room", "!other:x", [])
        assert not await store.set_enabled(txn, ALICE, "sender", "!r:x", True)
        assert not await store.set_enabled(txn, BOB, "room", "!r:x", True)
    assert await store.user_rules(database, ALICE) == [
        PushRule("room", "!r:x", ({"set_tweak": "sound"},))
    ]
    async with database.transaction() as txn:
        assert not await store.delete_rule(txn, ALICE, "override", "!r:x")
        assert await store.delete_rule(txn, ALICE, "room", "!r:x")
        assert not await store.delete_rule(txn, ALICE, "room", "!r:x")
    assert await store.user_rules(database, ALICE) == []


async def test_default_overrides(database: Database) -> None:
    store = PushRulesStore(database)
    assert await store.default_overrides(database, ALICE) == {}
    async with database.transaction() as txn:
        await store.set_default_enabled(txn, ALICE, "override", ".m.rule.master", True)
        await store.set_default_actions(txn, ALICE, "underride", ".m.rule.message", [])
        await store.set_default_actions(txn, ALICE, "override", ".m.rule.master", ["notify"])
        await store.set_default_enabled(txn, BOB, "override", ".m.rule.master", False)
    assert await store.default_overrides(database, ALICE) == {
        ("override", ".m.rule.master"): DefaultRuleOverride(enabled=True, actions=("notify",)),
        ("underride", ".m.rule.message"): DefaultRuleOverride(enabled=None, actions=()),
    }
    async with database.transaction() as txn:
        await store.set_default_enabled(txn, ALICE, "override", ".m.rule.master", False)
    overrides = await store.default_overrides(database, ALICE)
    assert overrides[("override", ".m.rule.master")] == DefaultRuleOverride(False, ("notify",))


async def test_failed_transaction_writes_nothing(database: Database) -> None:
    store = PushRulesStore(database)
    try:
        async with database.transaction() as txn:
            await store.put_rule(txn, ALICE, _rule("override", "a"), ["a"])
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert await store.user_rules(database, ALICE) == []
