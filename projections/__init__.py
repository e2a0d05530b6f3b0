"""The projection layer: the events streams folded into Postgres, metrics and queries.

Owns: the ``jobstream`` Postgres schema (``job_events``, ``jobs``, ``dead_letters``),
the projector process that fills it from every queue's events stream, the
projector's Prometheus metrics, the projection queries and maintenance
(rebuild, check, prune).

Invariants:
- ``job_events`` is append-only history keyed by (queue, stream entry id); a
  replayed entry is a no-op (``ON CONFLICT DO NOTHING``).
- ``jobs`` is written only by the projector (and rebuild), always as the fold of
  that job's ``job_events`` with :func:`streams.state.evolve`, so a rebuild from
  ``job_events`` equals the incremental result.
- Dependency rule: this package imports ``streams``, never ``handlers``;
  ``streams`` never imports this package.
"""
