"""SEO redirects when boards merge.

- ``graph``: a day's redirect candidates and legacy's redirects from mergers and expiries, and
  the collapse of redirect chains into one hop per URL, with expiry and refused loops (pure,
  vectorised);
- ``policy``: the allow-list of ``platform/redirects.yaml`` and the check of a URL (reason
  codes);
- ``safe``: the day's redirects with every source and target checked, the fallback rules and
  the refusals as dead letters;
- ``keys``: the request key (``host/path?query``) the exports and the edge function share;
- ``exports``: the map as an nginx ``map`` file and CloudFront KeyValueStore import files;
- ``steps``: the ``seo_redirects`` step over the stores, a day at a time.

May import ``streaming`` and below. Comparing with legacy's redirects is ``migration``'s job.
"""
