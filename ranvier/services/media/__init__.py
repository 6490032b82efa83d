"""The content repository (Client-Server API, "Content repository").

The service is ``ranvier.services.media.service.MediaService``; nothing is
imported here, so that the API modules can import ``timeouts`` at start
without the service's modules (the service is built at its first use,
ranvier/homeserver.py).
"""
