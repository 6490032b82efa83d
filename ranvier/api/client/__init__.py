"""Client-Server API endpoints (/_matrix/client)."""
