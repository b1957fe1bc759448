"""Events: what an event is, and which events are acceptable.

- ``envelope``: the envelope ``{id, type, source, version, time, data}`` and its EventBridge form;
- ``schemas``: a strict schema per ``(type, version)`` (the registry);
- ``upcasters``: version N to N+1, so consumers only ever see the latest version;
- ``validation``: ``validate(raw)`` returns an ``Envelope`` or a ``Rejection`` with a reason code.

The bottom of the core: imports only ``figstream.settings``.
"""
