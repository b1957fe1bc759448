"""Getting events in: the landing zone, routing, producers and the event generator.

- ``landing``: landing-batch keys (commit time first, so keys sort in landing order);
- ``cursor``: the sensors' durable cursor over the landing zone, with a look-back window;
- ``routing``: the streams as EventBridge event patterns (``platform/routing.yaml``);
- ``publish``: ``figstream publish``/``produce``: events into landing batches;
- ``generate``: the seeded event generator (boards, postings, updates, expiries, mergers);
- ``dataset``: a generated history written as legacy feed dumps plus landing batches;
- ``eventbridge``: the aws profile's producer (``PutEvents`` on the bus);
- ``sqs_intake``: a stream's SQS queue drained into one landing batch (the aws intake).

May import ``storage``, ``events`` and ``settings``.
"""
