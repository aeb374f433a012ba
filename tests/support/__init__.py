"""What the tests and the benchmarks share: the loopback fake Discord, `python -m bot` run against
it, and small models built in code."""
