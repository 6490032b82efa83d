"""The homeserver: one object holding config, database and every service.

Services are built here in dependency order and reach each other through this
object (``hs.accounts``, ``hs.rooms`` ...), never through globals. API
handlers get it from the aiohttp app (``request.app[HOMESERVER]``).
"""

from __future__ import annotations

from collections.abc import Callable

from ranvier.config import Config
from ranvier.core.signing import SigningKey
from ranvier.services.notifier import Notifier
from ranvier.services.ratelimit import RateLimiter
from ranvier.storage import Database


class Homeserver:
    def __init__(
        self,
        config: Config,
        database: Database,
        signing_key: SigningKey,
        clock_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.server_name = config.server_name
        self.database = database
        self.signing_key = signing_key
        self.clock_ms = clock_ms
        self.notifier = Notifier()
        self.ratelimiter = RateLimiter(config.ratelimit, clock_ms)
        # Services, in dependency order. Each takes this object.

    async def close(self) -> None:
        await self.database.close()
