"""Every error and warning wgtlab raises, in one tree.

Each message says what happened, what was expected, and what to do. None ever contains key
material.

    WgtError
    ├── ConfigError                   a wgtlab setting or argument is invalid
    │   └── IdentityKeyError          the user's identity key file is unsafe, unreadable or damaged
    ├── SandboxError                  a kernel could not run, or was stopped
    │   ├── InvalidModule             bytes are not a valid module, or exports do not fit ABI v1
    │   ├── ForbiddenImport           the module imports something the sandbox does not provide
    │   ├── AbiError                  the module broke ABI v1 (bad output pointer, output too big)
    │   ├── OutOfFuel                 the CPU budget (fuel) ran out
    │   ├── TimeLimitExceeded         the wall-clock deadline passed
    │   ├── MemoryLimitExceeded       the module wanted more memory than allowed
    │   ├── StackOverflow             recursion went past the stack limit
    │   ├── WasmTrap                  any other trap (unreachable, division by zero, ...)
    │   ├── ProcessExit               the module called WASI proc_exit
    │   ├── UdfError                  a Python function (@wgt.udf) raised inside the sandbox
    │   └── UdfBuildError             the Python-in-WASM runner could not be built or loaded
    ├── CESError                      a CES (compress, encrypt, shard) operation failed
    │   ├── KeyConfigError            the key given or in CES_ENCRYPTION_KEY is malformed
    │   ├── KeyMismatchError          the shards were sealed under another key
    │   ├── IntegrityError            data failed authentication or a checksum
    │   ├── ShardFormatError          a shard header is malformed or from another dataset
    │   ├── NotEnoughShardsError      too few usable shards to rebuild the data
    │   └── AuditLogError             the key audit log is on but unusable: the key use is refused
    ├── VerificationError             a result could not be verified
    │   ├── ProofError                a Merkle proof is malformed
    │   ├── SignatureError            a result's signature is missing or invalid
    │   └── ReceiptError              a receipt is malformed or does not verify
    ├── TrustError                    the trust ledger or policy refused an operation
    │   └── NoEligibleWorkers         not enough trusted workers for the requested replicas
    ├── JobError                      a job is ill-defined or could not complete
    │   ├── JobDefinitionError        a job definition is invalid (raised before anything runs)
    │   └── ChunkFailed               a chunk failed on every try (carries the chunk and reasons)
    └── ClusterError                  a cluster could not start, connect or dispatch

    WgtWarning (UserWarning)
    ├── EphemeralKeyWarning           data sealed under a random, per-process key
    └── SubscriberWarning             a job-event subscriber raised and was dropped (job goes on)
"""

from __future__ import annotations

import typing

if (
    typing.TYPE_CHECKING
):  # the type of JobError.result only; errors import nothing of wgtlab at run time
    from wgtlab.jobs.result import JobResult


class WgtError(Exception):
    """Root of every error wgtlab raises on purpose."""


class ConfigError(WgtError, ValueError):
    """A wgtlab setting or argument is invalid."""


class IdentityKeyError(ConfigError):
    """The user's identity key (what signs receipts) is in a file others may read or write,
    that another user owns, or that does not hold an Ed25519 key; the message says how to fix
    it, never the key."""


# --- sandbox ---------------------------------------------------------------------------------


class SandboxError(WgtError):
    """A kernel could not run inside the sandbox, or the sandbox stopped it."""

    def _repr_html_(self) -> str:
        from wgtlab.views import sandbox_error_html

        return sandbox_error_html(self)


class InvalidModule(SandboxError):
    """The bytes are not a valid WebAssembly module, or its exports do not follow ABI v1."""


class ForbiddenImport(SandboxError):
    """The module imports something the sandbox does not provide (checked before instantiation)."""

    def __init__(self, message: str, imports: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.imports = imports


class AbiError(SandboxError):
    """The module broke ABI v1: an output outside memory, or over the output cap."""


class OutOfFuel(SandboxError):
    """The module used up its CPU budget (``max_cpu_cycles`` fuel)."""


class TimeLimitExceeded(SandboxError):
    """The module ran past ``max_execution_time_ms``."""


class MemoryLimitExceeded(SandboxError):
    """The module needed more linear memory than ``max_memory_bytes``."""


class StackOverflow(SandboxError):
    """The module recursed past ``max_stack_bytes``."""


class WasmTrap(SandboxError):
    """The module trapped (unreachable, integer division by zero, out-of-bounds access, ...)."""


class ProcessExit(SandboxError):
    """The module called WASI ``proc_exit``; ``.code`` is the exit code it gave."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class UdfError(SandboxError):
    """A Python function raised inside the sandbox; carries the guest's exception and traceback."""

    def __init__(
        self,
        message: str,
        *,
        exc_type: str = "",
        exc_message: str = "",
        traceback: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback


class UdfBuildError(SandboxError):
    """The CPython-in-WebAssembly runner could not be built, loaded or given this function."""


# --- CES -------------------------------------------------------------------------------------


class CESError(WgtError):
    """A CES (compress, encrypt, shard) operation failed."""


class KeyConfigError(CESError, ValueError):
    """A key, or the ``CES_ENCRYPTION_KEY`` variable, is malformed. Never carries the value."""


class KeyMismatchError(CESError):
    """The shards were sealed under a different key than the one given."""


class IntegrityError(CESError):
    """Data failed authentication (AEAD tag, header MAC) or a checksum."""


class ShardFormatError(CESError):
    """A shard header is malformed, of an unknown version, or from another dataset."""


class NotEnoughShardsError(CESError):
    """Too few usable shards remain to rebuild the data."""

    def __init__(self, message: str, usable: int = 0, needed: int = 0) -> None:
        super().__init__(message)
        self.usable = usable
        self.needed = needed


class AuditLogError(CESError):
    """The CES key audit log is on (``WGTLAB_AUDIT_LOG`` or ``audit_log=``) but is misconfigured
    or cannot be written, so the key operation was refused before producing any output (fail
    closed). Says what failed and how to fix it; never carries key material."""


# --- verification and trust ------------------------------------------------------------------


class VerificationError(WgtError):
    """A result could not be verified."""


class ProofError(VerificationError):
    """A Merkle proof or tree argument is malformed (wrong index, size or sibling length)."""


class SignatureError(VerificationError):
    """A worker's signature on a result is missing or does not verify."""


class ReceiptError(VerificationError):
    """A receipt is malformed (not a DSSE envelope of an in-toto Statement wgtlab reads), or its
    verification failed (``ReceiptReport.raise_for_failure``): the message names what."""


class TrustError(WgtError):
    """The trust ledger or the worker-selection policy refused an operation."""


class NoEligibleWorkers(TrustError):
    """Not enough distinct, non-quarantined workers for the requested replicas."""


# --- jobs and clusters -----------------------------------------------------------------------


class JobError(WgtError):
    """A job is ill-defined or could not complete. ``.result`` is the ``JobResult`` with what
    did verify when the run got that far (chunks failed, or the trusted-side combine), else
    None."""

    def __init__(self, message: str, *, result: JobResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class JobDefinitionError(JobError, ValueError):
    """A job definition is invalid; raised when defined or when run, before any chunk runs."""


class ChunkFailed(JobError):
    """A chunk failed on every try; ``.chunk`` is its index, ``.reasons`` what went wrong."""

    def __init__(
        self,
        message: str,
        chunk: int = -1,
        reasons: tuple[str, ...] = (),
        *,
        result: JobResult | None = None,
    ) -> None:
        super().__init__(message, result=result)
        self.chunk = chunk
        self.reasons = reasons


class ClusterError(WgtError):
    """A cluster could not start, connect or dispatch work."""


# --- verified analytics ----------------------------------------------------------------------


class FrameError(WgtError, ValueError):
    """A frame expression or SQL query cannot run: an unknown column, a type that cannot take
    the operation, a function or SQL construct that is not supported. Raised when the expression
    is built (or the SQL parsed), before any chunk runs."""


class NoSuchColumn(FrameError, AttributeError):
    """A frame has no column of that name (also an AttributeError, as ``f.nope`` is)."""


# --- warnings --------------------------------------------------------------------------------


class WgtWarning(UserWarning):
    """Root of every warning wgtlab issues."""


class EphemeralKeyWarning(WgtWarning):
    """Data is being sealed under a random key that lives only in this process."""


class SubscriberWarning(WgtWarning):
    """A job-event subscriber (progress bar, dashboard, callback) raised; it was unsubscribed
    and the job went on without it."""


__all__ = [
    "AbiError",
    "AuditLogError",
    "CESError",
    "ChunkFailed",
    "ClusterError",
    "ConfigError",
    "EphemeralKeyWarning",
    "ForbiddenImport",
    "FrameError",
    "IdentityKeyError",
    "IntegrityError",
    "InvalidModule",
    "JobDefinitionError",
    "JobError",
    "KeyConfigError",
    "KeyMismatchError",
    "MemoryLimitExceeded",
    "NoEligibleWorkers",
    "NoSuchColumn",
    "NotEnoughShardsError",
    "OutOfFuel",
    "ProcessExit",
    "ProofError",
    "ReceiptError",
    "SandboxError",
    "ShardFormatError",
    "SignatureError",
    "StackOverflow",
    "SubscriberWarning",
    "TimeLimitExceeded",
    "TrustError",
    "UdfBuildError",
    "UdfError",
    "VerificationError",
    "WasmTrap",
    "WgtError",
    "WgtWarning",
]
