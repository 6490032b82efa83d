"""Federation services (Server-Server API): keyring, and the rest to come."""
