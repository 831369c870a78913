"""Tests of the benchmark scripts that have a CPU mode."""
