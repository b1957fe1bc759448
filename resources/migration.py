"""The migration control plane's resource: the ledger as it is on disk now, and the evidence."""

from pathlib import Path

import dagster as dg

from figstream.migration.gate import EvidenceStore
from figstream.migration.ledger import Ledger, load_ledger


class MigrationResource(dg.ConfigurableResource):
    """``ledger()`` re-reads the file on every call, so a rollback takes effect at the next
    run, before the code location is reloaded."""

    ledger_path: str
    evidence_path: str
    data_root: str  # where the legacy outputs live (``<data_root>/legacy/<day>/``)

    def ledger(self) -> Ledger:
        return load_ledger(self.ledger_path)

    def evidence(self) -> EvidenceStore:
        return EvidenceStore(self.evidence_path)

    @property
    def root(self) -> Path:
        return Path(self.data_root)
