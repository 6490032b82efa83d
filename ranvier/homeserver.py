"""The homeserver: one object holding config, database and every service.

Services are built here in dependency order and reach each other through this
object (``hs.accounts``, ``hs.rooms`` ...), never through globals. API
handlers get it from the aiohttp app (``request.app[HOMESERVER]``).

A few services that no request needs soon after a start are built at their
first use instead (``media``, ``search``): their modules are imported then, not
while the server starts (tests/test_idle_imports.py checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ranvier.config import Config
from ranvier.core.signing import SigningKey
from ranvier.core.x_matrix import request_signer
from ranvier.services.account_data import AccountDataService
from ranvier.services.accounts import AccountsService
from ranvier.services.devices import DevicesService
from ranvier.services.directory import DirectoryService
from ranvier.services.e2e_keys import E2eKeysService
from ranvier.services.e2e_sync import register_e2e_sync_extension
from ranvier.services.federation.acl import ServerAcls
from ranvier.services.federation.backfill import FederationBackfill
from ranvier.services.federation.client import FederationClient
from ranvier.services.federation.edus import FederationEdus
from ranvier.services.federation.events import FederationEventHandler
from ranvier.services.federation.invites import FederationInvites, HttpRemoteMemberships
from ranvier.services.federation.joins import JoinService
from ranvier.services.federation.keyring import Keyring
from ranvier.services.federation.memberships import FederationMemberships
from ranvier.services.federation.queries import FederationQueries
from ranvier.services.federation.reads import FederationReads
from ranvier.services.federation.sender import FederationSender
from ranvier.services.federation.transactions import TransactionReceiver
from ranvier.services.federation.transport import FederationTransport
from ranvier.services.federation.verify import PduChecker
from ranvier.services.filters import FilterService
from ranvier.services.key_backup import KeyBackupService
from ranvier.services.legacy_sync import LegacySyncService
from ranvier.services.notifier import Notifier
from ranvier.services.openid import OpenIdService
from ranvier.services.pagination import PaginationService
from ranvier.services.presence import PresenceService
from ranvier.services.profiles import ProfileService
from ranvier.services.push import PushService
from ranvier.services.push_rules import PushRulesService
from ranvier.services.pushers import PusherService
from ranvier.services.ratelimit import RateLimiter
from ranvier.services.receipts import ReceiptService
from ranvier.services.relations import RelationsService
from ranvier.services.reports import ReportsService
from ranvier.services.room_upgrade import RoomUpgradeService
from ranvier.services.rooms import RoomsService
from ranvier.services.spaces import SpacesService
from ranvier.services.sync import SyncService
from ranvier.services.to_device import ToDeviceService
from ranvier.services.typing import TypingService
from ranvier.services.user_directory import UserDirectoryService
from ranvier.storage import Database
from ranvier.storage.search import SearchStore
from ranvier.storage.server_keys import ServerKeyStore

if TYPE_CHECKING:
    from ranvier.services.media.service import MediaService
    from ranvier.services.search import SearchService


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
        # Users, devices and access tokens; every authenticated request asks it.
        self.accounts = AccountsService(self)
        # Rooms: events, state, memberships, aliases; profiles (used by member events).
        self.rooms = RoomsService(self)
        self.profiles = ProfileService(self)
        self.room_upgrades = RoomUpgradeService(self)  # POST /rooms/{roomId}/upgrade
        # Per-user data a client syncs (filters, account data, typing, receipts, presence).
        self.filters = FilterService(self)
        self.account_data = AccountDataService(self)
        self.typing = TypingService(self)
        self.receipts = ReceiptService(self)
        self.presence = PresenceService(self)
        # Push rules; writes m.push_rules account data, so after account_data.
        self.push_rules = PushRulesService(self)
        # Pushers and HTTP push delivery (background queues to push gateways).
        self.pushers = PusherService(self)
        # Push rule evaluation of received events, notification counts, /notifications.
        self.push = PushService(self)
        # End-to-end encryption: device management, keys and cross-signing,
        # send-to-device, key backup. Before sync, whose providers they are.
        self.e2e_keys = E2eKeysService(self)
        self.devices = DevicesService(self)
        self.to_device = ToDeviceService(self)
        self.key_backup = KeyBackupService(self)
        # /sync (one provider per stream, above) and room history: /messages, /context.
        self.sync = SyncService(self)
        register_e2e_sync_extension(self)  # to_device, device_lists, key counts
        self.pagination = PaginationService(self)
        self.relations = RelationsService(self)
        self.reports = ReportsService(self)  # content reports, for administrators
        self.legacy_sync = LegacySyncService(self)  # /events, /initialSync (deprecated)
        # Server-side search's index (written with the events; the search
        # itself is built at its first use: see search below) and the user directory.
        self.search_store = SearchStore(database)
        self.user_directory = UserDirectoryService(self)
        # Federation: outbound requests (discovery, TLS, SSRF guard) signed with
        # X-Matrix, and other servers' keys (for X-Matrix checks, events and the
        # notary), fetched through that client.
        self.sign_request = request_signer(self.server_name, signing_key)
        self.federation_client = FederationClient(
            config.federation, authorization=self.sign_request
        )
        self.keyring = Keyring(
            server_name=self.server_name,
            signing_key=signing_key,
            store=ServerKeyStore(database),
            clock_ms=clock_ms,
            fetch_json=self._fetch_key_json,
            trusted_key_servers=config.trusted_key_servers,
        )
        # Federation services over the HTTP transport: steps 1-3 on every PDU
        # (pdu_checker), receiving PDUs into rooms, joins both ways, what other
        # servers may read, and the per-destination sender (started with the app;
        # it only acts for rooms with members on other servers).
        self.federation_transport = FederationTransport(self.federation_client)
        self.pdu_checker = PduChecker(self.keyring)
        self.federation_events = FederationEventHandler(
            self, self.federation_transport, self.pdu_checker.verify
        )
        self.federation_joins = JoinService(
            self, self.federation_transport, self.pdu_checker.verify, self.federation_events
        )
        self.federation_reads = FederationReads(self)
        # History of remote rooms from before we joined (client /messages).
        self.federation_backfill = FederationBackfill(
            self, self.federation_transport, self.pdu_checker.verify, self.federation_events
        )
        self.server_acls = ServerAcls(self)
        self.federation_transactions = TransactionReceiver(self)
        self.federation_sender: FederationSender | None = FederationSender(
            self, self.federation_transport
        )
        # EDUs in (PUT /send hands them to on_edu) and out, remote device lists;
        # queries other servers make of us and we of them.
        self.federation_edus = FederationEdus(self)
        self.federation_queries = FederationQueries(self)
        # Invites, leaves and knocks with other servers (both sides).
        remote_memberships = HttpRemoteMemberships(self.federation_client)
        self.federation_invites = FederationInvites(self, remote_memberships)
        self.federation_memberships = FederationMemberships(self, remote_memberships)
        # Room directory, room summaries, mutual rooms; space hierarchies; OpenID.
        self.directory = DirectoryService(self)
        self.spaces = SpacesService(self)
        self.openid = OpenIdService(self)

    # Built at their first use: importing them costs every start ~6 ms (media)
    # and ~1.5 ms (search), for requests that seldom come first.

    @cached_property
    def media(self) -> MediaService:
        """The content repository: uploads, downloads, thumbnails, remote media."""
        from ranvier.services.media.service import MediaService

        return MediaService(self)

    @cached_property
    def search(self) -> SearchService:
        """Server-side search (POST /search) over the index in ``search_store``."""
        from ranvier.services.search import SearchService

        return SearchService(self)

    def _built(self, service: str) -> bool:
        """Whether the service built at its first use (a cached_property above) was used."""
        return service in vars(self)

    async def _fetch_key_json(self, destination: str, method: str, path: str, content: Any) -> Any:
        return await self.federation_client.request_json(method, destination, path, content=content)

    async def start(self) -> None:
        """Background work that needs the running loop: the sender resumes every
        destination owed events or EDUs since before a restart; push evaluation
        takes up what a crash left."""
        if self.federation_sender is not None:
            await self.federation_sender.start()
        await self.push.start()

    async def close(self) -> None:
        await self.federation_transactions.close()
        if self.federation_sender is not None:
            await self.federation_sender.close()
        await self.federation_edus.close()
        # Push evaluation first: what it finishes is handed to the pushers.
        await self.push.close()
        await self.pushers.close()
        await self.typing.close()
        await self.federation_client.close()
        if self._built("media"):
            await self.media.close()
        await self.database.close()
