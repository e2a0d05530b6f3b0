"""The platform's periodic jobs, declared as data (:class:`streams.cron.CronSpec`).

Owns: WHICH jobs run WHEN. ``jobstream scheduler`` fires :data:`SCHEDULES`;
``jobstream cron list`` shows them. Names and times are a contract with
operators (dashboards and job ids ``cron:{name}:...`` carry the names).

Decisions:
- Timezone UTC for every spec: these are platform maintenance and batch jobs, not
  a user's local wall clock, and UTC has no DST, so each runs exactly once per
  period. (A spec that must follow a local clock sets ``timezone`` to an IANA
  name; :mod:`streams.cron` documents the DST rule it then follows.)
- Every spec uses ``overlap="skip"`` (a slow run is never stacked on by the next:
  they all process "whatever is due", so a second concurrent run only contends)
  and ``missed="latest"``: after downtime, ONE catch-up run (a late cleanup or
  drip batch beats a skipped day; replaying every missed hour would be waste).
- The platform handlers land in a later issue; until then each spec points at a
  demo kind (``demo.noop``) with an empty payload. Swap ``kind``/``payload`` when
  they exist, keeping the names and times.
"""

from __future__ import annotations

from typing import Final

from streams.cron import CronSpec

PLACEHOLDER_KIND: Final = "demo.noop"

SCHEDULES: Final[tuple[CronSpec, ...]] = (
    CronSpec(
        name="recalculate-benchmarks",
        cron="0 * * * *",
        kind=PLACEHOLDER_KIND,
        missed="latest",
        overlap="skip",
    ),
    CronSpec(
        name="aggregate-analytics",
        cron="15 * * * *",
        kind=PLACEHOLDER_KIND,
        missed="latest",
        overlap="skip",
    ),
    CronSpec(
        name="cleanup-orphaned-files",
        cron="0 2 * * *",
        kind=PLACEHOLDER_KIND,
        priority="low",
        missed="latest",
        overlap="skip",
    ),
    CronSpec(
        name="send-drip-campaign-emails",
        cron="0 9 * * *",
        kind=PLACEHOLDER_KIND,
        missed="latest",
        overlap="skip",
    ),
    CronSpec(
        name="send-quarterly-reminders",
        cron="0 9 * * mon",
        kind=PLACEHOLDER_KIND,
        missed="latest",
        overlap="skip",
    ),
)
