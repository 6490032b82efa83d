"""Push rules endpoints (Client-Server API, "Push Rules: API"; pushrules.yaml).

Only the ``global`` scope exists. Paths are routed exactly as the spec lists
them (``/pushrules/`` and ``/pushrules/global/`` with their trailing slash).
Any other path under ``/pushrules`` is a malformed push rule path (issue 11,
"Bad input"): 400, not the router's 404 — ``M_UNRECOGNIZED`` for an unknown
scope, a missing or extra segment or a missing trailing slash (as Synapse's
push rule servlet answers), ``M_INVALID_PARAM`` for an unknown kind (as the
rule endpoints answer it); a spec path with a method it does not have stays
405 ``M_UNRECOGNIZED`` (Client-Server API, "Common error codes").
"""

from __future__ import annotations

import re

from aiohttp import web

from ranvier.api.auth import require_user
from ranvier.api.http import HOMESERVER, json_response, read_json_object
from ranvier.core.push_rules import KINDS
from ranvier.errors import MatrixError

routes = web.RouteTableDef()

PREFIX = "/_matrix/client/v3/pushrules"
RULE = PREFIX + "/global/{kind}/{rule_id}"


def _rule_path(request: web.Request) -> tuple[str, str]:
    return request.match_info["kind"], request.match_info["rule_id"]


@routes.get(PREFIX + "/")
async def get_push_rules(request: web.Request) -> web.Response:
    requester = await require_user(request)
    ruleset = await request.app[HOMESERVER].push_rules.get_ruleset(requester.user_id)
    return json_response({"global": ruleset.to_json()})


@routes.get(PREFIX + "/global/")
async def get_push_rules_global(request: web.Request) -> web.Response:
    requester = await require_user(request)
    ruleset = await request.app[HOMESERVER].push_rules.get_ruleset(requester.user_id)
    return json_response(ruleset.to_json())


@routes.get(RULE)
async def get_push_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    rule = await request.app[HOMESERVER].push_rules.get_rule(requester.user_id, kind, rule_id)
    return json_response(rule.to_json())


@routes.put(RULE)
async def put_push_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    body = await read_json_object(request)
    # An empty before/after is no position at all (as Synapse reads it).
    before = request.query.get("before") or None
    after = request.query.get("after") or None
    await request.app[HOMESERVER].push_rules.set_rule(
        requester.user_id, kind, rule_id, body, before=before, after=after
    )
    return json_response({})


@routes.delete(RULE)
async def delete_push_rule(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    await request.app[HOMESERVER].push_rules.delete_rule(requester.user_id, kind, rule_id)
    return json_response({})


@routes.get(RULE + "/enabled")
async def get_push_rule_enabled(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    rule = await request.app[HOMESERVER].push_rules.get_rule(requester.user_id, kind, rule_id)
    return json_response({"enabled": rule.enabled})


@routes.put(RULE + "/enabled")
async def put_push_rule_enabled(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    body = await read_json_object(request)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise MatrixError(400, "M_BAD_JSON", "'enabled' must be true or false.")
    await request.app[HOMESERVER].push_rules.set_enabled(requester.user_id, kind, rule_id, enabled)
    return json_response({})


@routes.get(RULE + "/actions")
async def get_push_rule_actions(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    rule = await request.app[HOMESERVER].push_rules.get_rule(requester.user_id, kind, rule_id)
    return json_response({"actions": list(rule.actions)})


@routes.put(RULE + "/actions")
async def put_push_rule_actions(request: web.Request) -> web.Response:
    requester = await require_user(request)
    kind, rule_id = _rule_path(request)
    body = await read_json_object(request)
    if "actions" not in body:
        raise MatrixError(400, "M_BAD_JSON", "Missing 'actions'.")
    await request.app[HOMESERVER].push_rules.set_actions(
        requester.user_id, kind, rule_id, body["actions"]
    )
    return json_response({})


#: The spec's push rule paths (after ``/pushrules``) and their methods.
_SPEC_PATHS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"/(global/)?"), frozenset({"GET"})),
    (re.compile(r"/global/[^/]+/[^/]+"), frozenset({"GET", "PUT", "DELETE"})),
    (re.compile(r"/global/[^/]+/[^/]+/(enabled|actions)"), frozenset({"GET", "PUT"})),
)


def _malformed_path_error(method: str, tail: str) -> MatrixError:
    """What a request to ``/pushrules<tail>`` that no spec route took gets."""
    for pattern, methods in _SPEC_PATHS:
        if pattern.fullmatch(tail) is not None and method not in methods:
            return MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request")
    if tail and not tail.startswith("/"):  # /pushrulesfoo: another path altogether
        return MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
    segments = tail.split("/")[1:]
    if not tail or segments == ["global"]:
        return MatrixError(400, "M_UNRECOGNIZED", "Push rule paths end with a slash here.")
    if segments[0] != "global":
        return MatrixError(400, "M_UNRECOGNIZED", f"Unknown push rule scope {segments[0]!r}.")
    if len(segments) >= 2 and segments[1] and segments[1] not in KINDS:
        return MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {segments[1]!r}.")
    if len(segments) < 3 or not segments[2]:
        return MatrixError(400, "M_UNRECOGNIZED", "Missing push rule kind or rule ID.")
    return MatrixError(400, "M_UNRECOGNIZED", "Malformed push rule path.")


# Registered after the spec routes above, so only what they did not take gets here.
@routes.route("*", PREFIX + "{tail:.*}")
async def malformed_push_rule_path(request: web.Request) -> web.Response:
    await require_user(request)
    raise _malformed_path_error(request.method, request.match_info["tail"])
