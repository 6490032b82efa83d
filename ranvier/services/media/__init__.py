"""The content repository (Client-Server API, "Content repository")."""

from ranvier.services.media.service import MediaFile, MediaService

__all__ = ["MediaFile", "MediaService"]
