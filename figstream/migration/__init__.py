"""The strangler fig: which side is authoritative, and the evidence to move a task on.

- ``ledger``: ``platform/migration_ledger.yaml``, parsed and checked, and edited in place;
- ``gate``: the cutover gate (``advance``/``rollback``), streaks and the evidence store;
- ``layout``: what each stage puts into Definitions (new assets, parity checks, bridges);
- ``parity_check``: one day's verdict, including a night legacy died on, and its evidence;
- ``publishing``: which side consumers read per stage, and the fallback to the other side;
- ``parity``: the keyed comparison of legacy's output with the new side's; ``normalise`` and
  ``parity_report`` hold its column normalisers and its report;
- ``views``: the new side rendered in each legacy task's output format;
- ``flaws``: the rules that recognise a documented legacy flaw in a parity difference;
- ``legacy_files``: reading and writing legacy's CSV outputs;
- ``mirror``: the legacy feed dump mirrored from the landing zone.

May import ``redirects``, ``streaming`` and below; only ``cli`` sits above it.
"""
