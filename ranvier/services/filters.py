"""User filters (Client-Server API, "Filtering"): upload, download, and resolve
the ``filter`` parameter of ``/sync`` and ``/messages``."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.filters import DEFAULT_FILTER, Filter, FilterError, parse_filter
from ranvier.core.input_limits import MAX_JSON_DEPTH, exceeds_depth
from ranvier.errors import MatrixError
from ranvier.storage.filters import FilterStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


#: Parsed filters kept, by their JSON text (inline filters, and the text of
#: stored ones: many users store the same filter) and by (user, filter ID).
#: Clients send the same filter with every /sync; parsing it again each time
#: was ~6 % of an incremental /sync's CPU. Filters never change once stored
#: (filter.yaml has no update), and ``Filter`` objects are immutable.
PARSED_BY_TEXT = 512
PARSED_BY_ID = 4096


def _invalid(exc: FilterError) -> MatrixError:
    return MatrixError(400, exc.errcode, exc.message)


def _remember(cache: OrderedDict[Any, Filter], key: Any, value: Filter, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


class FilterService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = FilterStore(hs.database)
        self._by_text: OrderedDict[str, Filter] = OrderedDict()
        self._by_id: OrderedDict[tuple[str, str], Filter] = OrderedDict()

    async def create_filter(self, user_id: str, definition: Any) -> str:
        """Validate and store ``definition``; its new filter ID.

        Raises 400 ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for an invalid filter.
        The ID is a decimal number, so it never starts with ``{`` (filter.yaml).
        """
        try:
            parse_filter(definition)
        except FilterError as exc:
            raise _invalid(exc) from None
        filter_id = await self.store.add_filter(user_id, orjson.dumps(definition).decode())
        return str(filter_id)

    async def _stored_text(self, user_id: str, filter_id: str) -> str | None:
        if not filter_id.isascii() or not filter_id.isdigit() or len(filter_id) > 18:
            return None
        return await self.store.get_filter(user_id, int(filter_id))

    async def get_filter_json(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        """The filter as uploaded, or None when ``user_id`` has no such filter."""
        text = await self._stored_text(user_id, filter_id)
        if text is None:
            return None
        value: dict[str, Any] = orjson.loads(text)
        return value

    async def get_filter(self, user_id: str, filter_id: str) -> Filter | None:
        known = self._by_id.get((user_id, filter_id))
        if known is not None:
            return known
        text = await self._stored_text(user_id, filter_id)
        if text is None:
            return None
        parsed = self._by_text.get(text)
        if parsed is None:
            parsed = parse_filter(orjson.loads(text))
            _remember(self._by_text, text, parsed, PARSED_BY_TEXT)
        _remember(self._by_id, (user_id, filter_id), parsed, PARSED_BY_ID)
        return parsed

    async def resolve_filter_param(self, user_id: str, param: str | None) -> Filter:
        """The filter a ``filter`` query parameter names: absent → the empty filter;
        starting with ``{`` → inline JSON (filter.yaml: IDs cannot start with ``{``);
        otherwise a stored filter ID of ``user_id``.

        Raises 400 ``M_NOT_JSON`` / ``M_BAD_JSON`` / ``M_INVALID_PARAM`` for a bad
        inline filter and 400 ``M_INVALID_PARAM`` for an unknown ID (as Synapse).
        """
        if param is None or param == "":
            return DEFAULT_FILTER
        if param.lstrip().startswith("{"):
            known = self._by_text.get(param)
            if known is not None:
                return known
            try:
                value = orjson.loads(param)
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
            if exceeds_depth(value, MAX_JSON_DEPTH):  # see core/input_limits.py
                raise MatrixError(400, "M_BAD_JSON", "filter is nested too deeply")
            try:
                parsed = parse_filter(value)
            except FilterError as exc:
                raise _invalid(exc) from None
            _remember(self._by_text, param, parsed, PARSED_BY_TEXT)
            return parsed
        found = await self.get_filter(user_id, param)
        if found is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"No filter with ID {param!r}")
        return found
