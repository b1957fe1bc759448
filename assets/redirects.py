"""The SEO redirects of the streaming platform: a daily asset next to legacy ``SeoRedirects``.

Thin: the work is in ``figstream.redirects.steps`` (I/O) and ``figstream.redirects.graph`` (pure).
Each daily partition writes the day's redirects and the collapsed redirect map as of the end of
the day; the map of a day builds on the kept map of the day before, and the step computes any
missing earlier day itself, so a partition can be materialised alone or a range backfilled in
one run (days are processed in order inside the run).

Every target is checked against the allow-list of ``platform/redirects.yaml``: the metadata
counts what was refused (by reason code; each refusal is also a dead letter) and which fallback
rule each redirect took. On the aws profile (state on DynamoDB) the map of the run's last day is
also published to the ``redirects`` table. Two exports follow the map, each a daily asset: the
nginx ``map`` file and the CloudFront KeyValueStore import files.
"""

from collections import Counter

import dagster as dg
import pyarrow.compute as pc

from assets.streaming import GROUP, daily_partitions
from figstream.migration.ledger import Ledger
from figstream.redirects import exports, steps
from figstream.redirects.graph import REASON_EXPIRED, REASON_MERGED
from figstream.redirects.policy import load_policy
from figstream.settings import StreamingSettings
from resources.stores import DynamoStateStoreResource, StreamingResources

PREVIEW_ROWS = 5


def _preview(redirects) -> str:
    rows = redirects.slice(0, PREVIEW_ROWS).to_pylist()
    lines = [f"| {r['from_url']} | {r['to_url']} | {r['reason']} |" for r in rows]
    return "\n".join(["| from_url | to_url | reason |", "|---|---|---|", *lines])


def _publish(streaming: StreamingResources, redirect_map, day: str, policy) -> dict:
    """On the aws profile, the map in DynamoDB; metadata of what changed."""
    if not isinstance(streaming.state, DynamoStateStoreResource):
        return {}
    from figstream.storage.dynamo_redirects import DynamoRedirectMap

    report = DynamoRedirectMap(streaming.state.aws.config()).publish(
        exports.entries(redirect_map, policy).entries, day
    )
    if report.refused_older:
        return {"dynamodb_not_published": f"holds {report.refused_older}, newer than {day}"}
    return {"dynamodb_written": report.written, "dynamodb_deleted": report.deleted}


def build_redirect_assets(ledger: Ledger, settings: StreamingSettings) -> list:
    """``seo_redirects`` and its two exports, daily; ``settings`` is taken for symmetry with
    the streaming assets (a daily rollup has no freshness policy of its own)."""
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
        policy = load_policy()
        days = context.partition_keys
        by_day = steps.seo_redirects_days(streaming.stores(), days, epoch_day, policy)
        last_day = max(by_day)
        last = by_day[last_day]
        reasons = last.redirects["reason"]
        hops = pc.max(last.map["hops"]).as_py() or 0
        refused = Counter(c for r in by_day.values() for c in r.refused["code"].to_pylist())
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
                # refusals in the run, by reason code (each one is also a dead letter)
                "refused_in_run": sum(refused.values()),
                "refused_by_reason": dg.MetadataValue.json(dict(sorted(refused.items()))),
                "loops_refused": refused.get("redirect_loop", 0),
                **{f"fallback_{rule}": n for rule, n in (last.fallbacks or {}).items()},
                "map_expired_today": last.expired,
                "keep_301_days": policy.keep_301_days,
                **_publish(streaming, last.map, last_day, policy),
            }
        )

    export_spec = {
        "deps": [seo_redirects],
        "partitions_def": daily_partitions(ledger),
        "group_name": GROUP,
        "backfill_policy": dg.BackfillPolicy.single_run(),
    }

    @dg.asset(kinds={"nginx"}, **export_spec)
    def seo_redirects_nginx(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """The redirect map as an nginx ``map`` file (host and URI to the 301's location)."""
        stores, policy = streaming.stores(), load_policy()
        for day in context.partition_keys:
            export = exports.entries(steps.day_map(stores, day, epoch_day, policy), policy)
            data = exports.nginx_map(export, day)
            stores.objects.put(steps.nginx_key(day), data)
        return dg.MaterializeResult(
            metadata={
                "entries": len(export.entries),
                "left_out": dg.MetadataValue.json(dict(export.skipped)),
                "bytes": len(data),
                "path": dg.MetadataValue.path(steps.nginx_key(day)),
            }
        )

    @dg.asset(kinds={"cloudfront"}, **export_spec)
    def seo_redirects_cloudfront(
        context: dg.AssetExecutionContext, streaming: StreamingResources
    ) -> dg.MaterializeResult:
        """The redirect map as CloudFront KeyValueStore import files, each under 5 MB."""
        stores, policy = streaming.stores(), load_policy()
        for day in context.partition_keys:
            export = exports.entries(steps.day_map(stores, day, epoch_day, policy), policy)
            files = list(exports.cloudfront_files(export, policy))
            for part, data in enumerate(files):
                stores.objects.put(steps.cloudfront_key(day, part), data)
            # a smaller map than before: the extra parts of the old one go
            prefix = steps.cloudfront_key(day, 0).rsplit("/", 1)[0] + "/"
            for key in stores.objects.list(prefix)[len(files) :]:
                stores.objects.delete(key)
        return dg.MaterializeResult(
            metadata={
                "entries": len(export.entries),
                "files": len(files),
                "largest_file_bytes": max(len(f) for f in files),
                "left_out": dg.MetadataValue.json(dict(export.skipped)),
                "path": dg.MetadataValue.path(steps.cloudfront_key(day, 0)),
            }
        )

    return [seo_redirects, seo_redirects_nginx, seo_redirects_cloudfront]
