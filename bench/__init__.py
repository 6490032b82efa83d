"""Benchmarks: ``make bench`` measures Ranvier against Synapse side by side (bench/run.py)."""
