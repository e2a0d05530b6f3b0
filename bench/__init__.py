"""The jobstream benchmark harness: throughput, latency, projection and reclaim figures.

``python -m bench [--quick] [--json PATH]`` measures on the local Redis (and
Postgres, for the projection figures) and prints a table plus a JSON file with
the machine, versions and settings. Every measured run uses a namespace of its
own (and a Postgres schema of its own) and deletes it afterwards; the machine's
Redis and Postgres are never stopped or flushed.

Modules: :mod:`bench.common` (runs, statistics, namespaces, machine facts),
:mod:`bench.core` (enqueue, drain, pickup latency, reclaim),
:mod:`bench.projection` (projector apply rate and lag), :mod:`bench.worker_proc`
(the worker subprocess the benchmarks spawn) and :mod:`bench.profile_worker`
(a cProfile of an in-process worker's hot path).
"""
