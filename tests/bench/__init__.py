"""Tests of the benchmark harness (bench/): its quick mode yields well-formed results."""
