"""Push rules of local users (Client-Server API, "Push Rules: API").

Every change also rewrites the user's ``m.push_rules`` global account data
("Push Rules: Events": the content is the user's current rules) in the same
transaction, which gives it a position of the ``account_data`` stream, so
/sync delivers it like any account data; then the user's syncs are woken.

Users who never changed a rule have no ``m.push_rules`` row: an initial /sync
should take :meth:`PushRulesService.account_data_content` for them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ranvier.core.push_rules import (
    InvalidPushRule,
    PushRule,
    Ruleset,
    build_ruleset,
    check_kind,
    check_new_rule_id,
    is_server_default_rule_id,
    parse_actions,
    parse_rule_body,
    position_rule,
)
from ranvier.errors import MatrixError
from ranvier.storage.engine import Queryable, Transaction
from ranvier.storage.push_rules import PushRulesStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

PUSH_RULES_TYPE = "m.push_rules"


def _not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "The push rule was not found.")


def _bad_request(error: InvalidPushRule) -> MatrixError:
    return MatrixError(400, error.errcode, str(error))


class PushRulesService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = PushRulesStore(hs.database)
        # One writer per user at a time in this process, so that concurrent
        # PUTs cannot interleave their read of the order and its rewrite.
        self._locks: dict[str, _CountedLock] = {}

    # --- reading ------------------------------------------------------------------

    async def _load(self, db: Queryable, user_id: str) -> Ruleset:
        rules = await self.store.user_rules(db, user_id)
        overrides = await self.store.default_overrides(db, user_id)
        return build_ruleset(user_id, rules, overrides)

    async def get_ruleset(self, user_id: str) -> Ruleset:
        """The user's rules, server defaults included, in evaluation order."""
        return await self._load(self.hs.database, user_id)

    async def account_data_content(self, user_id: str) -> dict[str, Any]:
        """The content of the user's ``m.push_rules`` event: ``{"global": ruleset}``."""
        return {"global": (await self.get_ruleset(user_id)).to_json()}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> PushRule:
        """One rule; 400 for an unknown kind, 404 ``M_NOT_FOUND`` for an unknown rule."""
        self._check_kind(kind, rule_id)
        rule = (await self.get_ruleset(user_id)).get(kind, rule_id)
        if rule is None:
            raise _not_found()
        return rule

    # --- writing ------------------------------------------------------------------

    async def set_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: Mapping[str, Any],
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """setPushRule: create or replace a user-defined rule, placed per before/after."""
        try:
            check_kind(kind)
            check_new_rule_id(rule_id)
            rule = parse_rule_body(kind, rule_id, body)
        except InvalidPushRule as error:
            raise _bad_request(error) from None
        async with self._writing(user_id) as txn:
            existing = await self.store.rule_ids(txn, user_id, kind)
            try:
                order = position_rule(existing, rule_id, before=before, after=after)
            except InvalidPushRule as error:
                raise _bad_request(error) from None
            await self.store.put_rule(txn, user_id, rule, order)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        """deletePushRule; server-default rules cannot be deleted (400)."""
        self._check_kind(kind, rule_id)
        if is_server_default_rule_id(rule_id):
            if (await self.get_ruleset(user_id)).get(kind, rule_id) is None:
                raise _not_found()
            raise MatrixError(400, "M_INVALID_PARAM", "Server-default rules cannot be deleted.")
        async with self._writing(user_id) as txn:
            if not await self.store.delete_rule(txn, user_id, kind, rule_id):
                raise _not_found()

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        """setPushRuleEnabled, for user-defined and server-default rules alike."""
        self._check_kind(kind, rule_id)
        async with self._writing(user_id) as txn:
            if is_server_default_rule_id(rule_id):
                await self._require_default(kind, rule_id)
                await self.store.set_default_enabled(txn, user_id, kind, rule_id, enabled)
            elif not await self.store.set_enabled(txn, user_id, kind, rule_id, enabled):
                raise _not_found()

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: object) -> None:
        """setPushRuleActions, for user-defined and server-default rules alike."""
        self._check_kind(kind, rule_id)
        try:
            parsed = parse_actions(actions)
        except InvalidPushRule as error:
            raise _bad_request(error) from None
        async with self._writing(user_id) as txn:
            if is_server_default_rule_id(rule_id):
                await self._require_default(kind, rule_id)
                await self.store.set_default_actions(txn, user_id, kind, rule_id, parsed)
            elif not await self.store.set_actions(txn, user_id, kind, rule_id, parsed):
                raise _not_found()

    # --- helpers ------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str, rule_id: str) -> None:
        """400 for an unknown kind; 404 for a rule ID no rule can have (a NUL,
        which PostgreSQL text cannot hold, so it must not reach the store)."""
        try:
            check_kind(kind)
        except InvalidPushRule as error:
            raise _bad_request(error) from None
        if "\x00" in rule_id:
            raise _not_found()

    async def _require_default(self, kind: str, rule_id: str) -> None:
        # Defaults do not depend on the user for their existence; any user ID will do.
        if build_ruleset("@_:_", ()).get(kind, rule_id) is None:
            raise _not_found()

    @asynccontextmanager
    async def _writing(self, user_id: str) -> AsyncIterator[Transaction]:
        """A transaction for a change to ``user_id``'s rules; on success the
        ``m.push_rules`` account data is rewritten inside it and, after the
        commit, the user's syncs are woken."""
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = _CountedLock()
        lock.users += 1
        try:
            async with lock.lock:
                async with self.hs.database.transaction() as txn:
                    yield txn
                    await self._publish(txn, user_id)
                push = getattr(self.hs, "push", None)
                if push is not None:
                    push.invalidate_rules(user_id)
                await self._notify(user_id)
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[user_id]

    async def _publish(self, txn: Transaction, user_id: str) -> None:
        content = {"global": (await self._load(txn, user_id)).to_json()}
        await self.hs.account_data.set_in_transaction(txn, user_id, None, PUSH_RULES_TYPE, content)

    async def _notify(self, user_id: str) -> None:
        account_data = getattr(self.hs, "account_data", None)
        notify = getattr(account_data, "notify_push_rules_changed", None)
        if notify is None:
            self.hs.notifier.notify_users([user_id])
            return
        result = notify(user_id)
        if inspect.isawaitable(result):
            await result


class _CountedLock:
    """A lock that knows how many callers hold or await it, so it can be dropped."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
