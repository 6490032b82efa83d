"""Federation: the services behind the Server-Server API (keys, transport, receiving, sending, joins)."""
