"""How long a download or thumbnail request waits for media still being uploaded
(``timeout_ms``, Content repository, v1.7 asynchronous uploads).

A module of its own so that the API handlers can name the default without
importing the media service, which is built at its first use (homeserver.py).
"""

#: timeout_ms: "The default value is 20000"; "SHOULD impose a maximum value".
DEFAULT_WAIT_MS = 20_000
MAX_WAIT_MS = 60_000
