"""SEO redirects when boards merge.

- ``graph``: a day's redirects from mergers and expiries, and the collapse of redirect chains
  into one hop per URL (pure, vectorised);
- ``steps``: the ``seo_redirects`` step over the stores, a day at a time.

May import ``streaming`` and below. Comparing with legacy's redirects is ``migration``'s job.
"""
