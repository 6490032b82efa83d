"""Federation: the services behind the Server-Server API."""
