"""HTTP endpoints, one module per spec section."""
