"""The resources each deployment profile binds, keyed by the names assets ask for."""

from __future__ import annotations

from typing import Any

from figstream import settings
from figstream.ledger import Ledger
from resources.luigi_runner import LuigiRunner


def resources_for(profile: str, ledger: Ledger) -> dict[str, Any]:
    home = settings.data_home()
    luigi_runner = LuigiRunner(data_root=str(home), epoch=ledger.legacy_epoch.isoformat())
    if profile == "local":
        return {"luigi_runner": luigi_runner}
    raise NotImplementedError(
        f"FIGSTREAM_PROFILE={profile!r}: the AWS profile is not built yet; use 'local'"
    )
