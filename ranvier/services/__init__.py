"""Domain logic: one module per area, each a class built by ``ranvier.homeserver``."""
