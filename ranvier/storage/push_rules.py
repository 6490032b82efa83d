"""Store of push rules: a user's own rules in priority order, and the user's
changes (enabled, actions) to server-default rules. The defaults themselves are
code (ranvier/core/push_rules.py).

Writes take the caller's transaction, so that a change, the new priorities and
the ``m.push_rules`` account data the service derives from them commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ranvier.core.push_rules import DefaultRuleOverride, PushRule
from ranvier.storage.engine import Database, Queryable, Transaction, placeholders, upsert_sql

_UPSERT_RULE = upsert_sql(
    "push_rules",
    ("user_id", "kind", "rule_id"),
    ("user_id", "kind", "rule_id", "priority", "conditions", "pattern", "actions", "enabled"),
    # A PUT of an existing rule replaces its body; enabled and place are kept.
    ("conditions", "pattern", "actions"),
)
_UPSERT_DEFAULT_ENABLED = upsert_sql(
    "push_rule_default_overrides",
    ("user_id", "kind", "rule_id"),
    ("user_id", "kind", "rule_id", "enabled"),
)
_UPSERT_DEFAULT_ACTIONS = upsert_sql(
    "push_rule_default_overrides",
    ("user_id", "kind", "rule_id"),
    ("user_id", "kind", "rule_id", "actions"),
)


def _dump(value: Sequence[Any]) -> str:
    return orjson.dumps(list(value)).decode()


class PushRulesStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def user_rules(self, db: Queryable, user_id: str) -> list[PushRule]:
        """The user's own rules, each kind's in priority order (most important first)."""
        rows = await db.fetch_all(
            "SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules "
            "WHERE user_id = ? ORDER BY kind, priority, rule_id",
            user_id,
        )
        return [
            PushRule(
                kind=row[0],
                rule_id=row[1],
                conditions=tuple(orjson.loads(row[2])),
                pattern=row[3],
                actions=tuple(orjson.loads(row[4])),
                enabled=bool(row[5]),
                default=False,
            )
            for row in rows
        ]

    async def users_with_rules(self, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` have rules of their own or changed a default."""
        if not user_ids:
            return set()
        marks = placeholders(len(user_ids))
        rows = await self.database.fetch_all(
            f"SELECT user_id FROM push_rules WHERE user_id IN ({marks}) UNION "
            f"SELECT user_id FROM push_rule_default_overrides WHERE user_id IN ({marks})",
            *user_ids,
            *user_ids,
        )
        return {row[0] for row in rows}

    async def all_users_with_rules(self) -> frozenset[str]:
        """Every user with rules of their own or a changed default."""
        rows = await self.database.fetch_all(
            "SELECT user_id FROM push_rules UNION SELECT user_id FROM push_rule_default_overrides"
        )
        return frozenset(row[0] for row in rows)

    async def default_overrides(
        self, db: Queryable, user_id: str
    ) -> dict[tuple[str, str], DefaultRuleOverride]:
        """The user's changes to server-default rules, by (kind, rule_id)."""
        rows = await db.fetch_all(
            "SELECT kind, rule_id, enabled, actions FROM push_rule_default_overrides "
            "WHERE user_id = ?",
            user_id,
        )
        return {
            (row[0], row[1]): DefaultRuleOverride(
                enabled=None if row[2] is None else bool(row[2]),
                actions=None if row[3] is None else tuple(orjson.loads(row[3])),
            )
            for row in rows
        }

    async def rule_ids(self, db: Queryable, user_id: str, kind: str) -> list[str]:
        """The IDs of the user's rules of ``kind``, most important first."""
        rows = await db.fetch_all(
            "SELECT rule_id FROM push_rules WHERE user_id = ? AND kind = ? "
            "ORDER BY priority, rule_id",
            user_id,
            kind,
        )
        return [row[0] for row in rows]

    async def put_rule(
        self, txn: Transaction, user_id: str, rule: PushRule, order: Sequence[str]
    ) -> None:
        """Create or replace ``rule`` and set the priorities of the kind to ``order``.

        ``order`` lists every user rule ID of the kind, ``rule.rule_id`` included.
        """
        await txn.execute(
            _UPSERT_RULE,
            user_id,
            rule.kind,
            rule.rule_id,
            0,
            _dump(rule.conditions),
            rule.pattern,
            _dump(rule.actions),
            rule.enabled,
        )
        await txn.execute_many(
            "UPDATE push_rules SET priority = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
            [(priority, user_id, rule.kind, rule_id) for priority, rule_id in enumerate(order)],
        )

    async def delete_rule(self, txn: Transaction, user_id: str, kind: str, rule_id: str) -> bool:
        """Delete one of the user's rules; False when there was none."""
        count = await txn.execute(
            "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
            user_id,
            kind,
            rule_id,
        )
        return count > 0

    async def set_enabled(
        self, txn: Transaction, user_id: str, kind: str, rule_id: str, enabled: bool
    ) -> bool:
        """Enable or disable one of the user's rules; False when there is none."""
        count = await txn.execute(
            "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
            enabled,
            user_id,
            kind,
            rule_id,
        )
        return count > 0

    async def set_actions(
        self, txn: Transaction, user_id: str, kind: str, rule_id: str, actions: Sequence[Any]
    ) -> bool:
        """Replace the actions of one of the user's rules; False when there is none."""
        count = await txn.execute(
            "UPDATE push_rules SET actions = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
            _dump(actions),
            user_id,
            kind,
            rule_id,
        )
        return count > 0

    async def set_default_enabled(
        self, txn: Transaction, user_id: str, kind: str, rule_id: str, enabled: bool
    ) -> None:
        """Record the user's choice to enable or disable a server-default rule."""
        await txn.execute(_UPSERT_DEFAULT_ENABLED, user_id, kind, rule_id, enabled)

    async def set_default_actions(
        self, txn: Transaction, user_id: str, kind: str, rule_id: str, actions: Sequence[Any]
    ) -> None:
        """Record the user's actions for a server-default rule."""
        await txn.execute(_UPSERT_DEFAULT_ACTIONS, user_id, kind, rule_id, _dump(actions))
