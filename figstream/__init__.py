"""figstream's domain core: pure Python, Arrow and SQLite, with no Dagster import.

The Dagster layer (``assets/``, ``sensors/``, ``resources/``) and the CLI call into it; it calls
nothing above it. Its packages, from the bottom up (each may import only those below it;
``make lint`` checks this with import-linter, see ``[tool.importlinter]`` in pyproject.toml)::

    settings     where things live: paths, the profile, platform/streaming.yaml
    events/      the envelope, schemas per (type, version), upcasters, validation
    storage/     the object store, the state store, the dead-letter store
    ingest/      landing keys and cursor, routing, publishing, the event generator
    streaming/   the transform (parsing, table operations) and one module per streaming step
    redirects/   SEO redirects when boards merge
    migration/   the strangler fig: ledger, parity, the cutover gate, legacy-format views
    cli/         the ``figstream`` command, one command group per module
"""
