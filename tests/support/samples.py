"""Where the real Synapse federation samples live: ``../shared/federation-samples``
beside the checkout (override with FEDERATION_SAMPLES)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(
    os.environ.get("FEDERATION_SAMPLES", str(REPO_ROOT.parent / "shared" / "federation-samples"))
)


def samples_missing_reason() -> str | None:
    if SAMPLES.is_dir():
        return None
    return f"no federation samples at {SAMPLES}"
