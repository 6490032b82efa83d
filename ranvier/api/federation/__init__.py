"""Server-Server API endpoints (/_matrix/federation and /_matrix/key)."""
