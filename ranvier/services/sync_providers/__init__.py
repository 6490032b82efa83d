"""/sync as one provider per stream (DESIGN.md, "Streams").

Each provider (:class:`~ranvier.services.sync_providers.base.SyncProvider`)
answers "what changed for this user between positions A and B" for its stream
and returns its :class:`~ranvier.services.sync_providers.base.Section`; the
front ends (ranvier/services/sync.py for /sync v2; legacy_sync.py for
/initialSync) compose them. ``memberships.py`` builds the per-request context
all share (the user's rooms and their membership changes in the range).
"""
