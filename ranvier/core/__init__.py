"""Ranvier's pure protocol core: no I/O, no clock, no database.

Everything here is a function over plain data, tested against the spec's
examples and the oracle vectors in ``../shared/test-vectors/``.
"""
