"""The SEO redirects of the streaming platform: a daily asset next to legacy ``SeoRedirects``.

Thin: the work is in ``figstream.redirects.steps`` (I/O) and ``figstream.redirects.graph`` (pure).
Each daily partition writes the day's redirects and the collapsed redirect map as of the end of
the day; the map of a day builds on the kept map of the day before, and the step computes any
missing earlier day itself, so a partition can be materialised alone or a range backfilled in
one run (days are processed in order inside the run).
"""

import dagster as dg
import pyarrow.compute as pc

from assets.streaming import GROUP, daily_partitions
from figstream.migration.ledger import Ledger
from figstream.redirects import steps
from figstream.redirects.graph import REASON_EXPIRED, REASON_MERGED
from figstream.settings import StreamingSettings
from resources.stores import StreamingResources

PREVIEW_ROWS = 5


def _preview(redirects) -> str:
    rows = redirects.slice(0, PREVIEW_ROWS).to_pylist()
    lines = [f"| {r['from_url']} | {r['to_url']} | {r['reason']} |" for r in rows]
    return "\n".join(["| from_url | to_url | reason |", "|---|---|---|", *lines])


def build_redirect_assets(ledger: Ledger, settings: StreamingSettings) -> list:
    """``seo_redirects``, daily; ``settings`` is taken for symmetry with the streaming assets
    (a daily rollup has no freshness policy of its own)."""
    del settings
    epoch_day = ledger.legacy_epoch.isoformat()

    @dg.asset(
        deps=[
            dg.AssetKey("board_daily_stats"),  # keeps the end-of-day search index state
            dg.AssetKey("raw_events"),
            dg.AssetKey("board_mergers"),
        ],
        partitions_def=daily_partitions(ledger),
        kinds={"parquet"},
        group_name=GROUP,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def seo_redirects(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """301s for the postings that went away each day (expired, or their board was absorbed
        in a merger) and the redirect map with every chain collapsed to one hop."""
        by_day = steps.seo_redirects_days(streaming.stores(), context.partition_keys, epoch_day)
        last_day = max(by_day)
        last = by_day[last_day]
        reasons = last.redirects["reason"]
        hops = pc.max(last.map["hops"]).as_py() or 0
        return dg.MaterializeResult(
            metadata={
                "days": len(by_day),
                "last_day": last_day,
                "redirects_today": last.redirects.num_rows,
                "redirects_expired": pc.sum(pc.equal(reasons, REASON_EXPIRED)).as_py() or 0,
                "redirects_board_merged": pc.sum(pc.equal(reasons, REASON_MERGED)).as_py() or 0,
                "redirects_in_run": sum(r.redirects.num_rows for r in by_day.values()),
                "map_size": last.map.num_rows,
                "map_entries_rewritten": last.rewritten,
                "longest_chain_collapsed": hops,
                "path": dg.MetadataValue.path(steps.map_key(last_day)),
                "preview": dg.MetadataValue.md(_preview(last.redirects)),
            }
        )

    return [seo_redirects]
