"""Events: what an event is, which events are acceptable, and how versions evolve.

- ``envelope``: the envelope ``{id, type, source, version, time, data}`` and its EventBridge form;
- ``schemas``: a strict schema per ``(type, version)`` (the registry) and each type's
  compatibility mode;
- ``compatibility``: which changes each mode allows, and the consumers a change would break;
- ``arrow``: a schema's Arrow form (nested models as structs), shared by the steps and checks;
- ``upcasters``: version N to N+1 (and down again), the load-time check, the registry snapshot
  (``registry.json``, what ``figstream schema check --against`` compares with);
- ``postings`` and ``geo``: job.posted/job.updated v1 <-> v2 and the flat row both become;
- ``validation``: ``validate(raw)`` returns an ``Envelope`` or a ``Rejection`` with a reason code.

The bottom of the core: imports only ``figstream.settings``.
"""
