"""The end-to-end encryption part of ``GET /sync``: its providers, registered
with the sync service (``hs.sync.register_provider``; see
ranvier/services/sync_providers/).

sync.yaml: ``to_device.events`` (the device's inbox), ``device_lists``
(``changed``/``left``, incremental syncs only), ``device_one_time_keys_count``
and ``device_unused_fallback_key_types``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.services.sync_providers.device_keys import DeviceKeysProvider
from ranvier.services.sync_providers.device_lists import DeviceListsProvider
from ranvier.services.sync_providers.to_device import ToDeviceProvider

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver


def register_e2e_sync_extension(hs: Homeserver) -> None:
    """Register the E2EE providers (in the order their fields appear)."""
    hs.sync.register_provider(ToDeviceProvider(hs))
    hs.sync.register_provider(DeviceKeysProvider(hs))
    hs.sync.register_provider(DeviceListsProvider(hs))
