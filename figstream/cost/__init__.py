"""Cost to the dollar: the streaming platform's monthly AWS bill, per service and to the cent,
beside the legacy nightly EC2 batch's for the same volume.

- ``prices.py``: the dated unit-price table, ``platform/prices.yaml`` (free tiers included),
  and its staleness warning;
- ``model.py``: pure arithmetic from a month of traffic and a deployment to a bill;
- ``deployment.py``: the always-on tasks, read from ``platform/aws/ecs/``;
- ``measure.py``: a month of traffic measured from the stores over a window, or a what-if;
- ``render.py``: the estimate as markdown (CLI and UI) and JSON.

``figstream cost`` (``figstream/cli/cost.py``) and the ``platform_cost`` asset
(``assets/cost.py``) are the two ways in.
"""
