"""Trust: the SQLite ledger of verified outcomes and the policy that picks workers from it.

Layer 2: stdlib sqlite3 and platformdirs; pandas is imported only when a DataFrame is asked for.
"""

from wgtlab.trust.ledger import (
    SCHEMA_VERSION,
    Outcome,
    TrustLedger,
    WorkerState,
    default_ledger_path,
)
from wgtlab.trust.policy import TrustPolicy
from wgtlab.trust.rules import QuarantineRule

__all__ = [
    "SCHEMA_VERSION",
    "Outcome",
    "QuarantineRule",
    "TrustLedger",
    "TrustPolicy",
    "WorkerState",
    "default_ledger_path",
]
