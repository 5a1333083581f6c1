"""Receipts: a JobResult as a signed, portable in-toto Statement in a DSSE envelope, and its
verification anywhere (signatures, Merkle roots, the data recut, chunks re-run in the sandbox).
"""

from wgtlab.receipts.checks import Check, ReceiptReport
from wgtlab.receipts.dsse import PAYLOAD_TYPE, pae
from wgtlab.receipts.identity import (
    IDENTITY_ENV,
    Identity,
    identity_path,
    load_public_key,
    user_identity,
)
from wgtlab.receipts.receipt import Receipt
from wgtlab.receipts.statement import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    result_digest,
    result_head,
)

__all__ = [
    "IDENTITY_ENV",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Check",
    "Identity",
    "Receipt",
    "ReceiptReport",
    "identity_path",
    "load_public_key",
    "pae",
    "result_digest",
    "result_head",
    "user_identity",
]
