"""Every default wgtlab uses, defined once; constructors fall back to these.

Change a default here and every layer sees it. Nothing in this module imports wgtlab.
"""

from __future__ import annotations

from typing import Final

# --- sandbox (ResourceLimits) -- the seed system's documented limits ---------------------------
MAX_MEMORY_BYTES = 256 << 20  # 256 MiB of linear memory
MAX_CPU_CYCLES = 1_000_000_000  # wasmtime fuel units
MAX_EXECUTION_TIME_MS = 30_000  # wall clock
MAX_STACK_BYTES = 1 << 20  # 1 MiB of wasm stack
MAX_OUTPUT_BYTES = 64 << 20  # cap on what a kernel may return
MAX_LOG_BYTES = 64 << 10  # cap on captured stdout / stderr, each
# Trusted side: a UDF's JSON output may hold at most this many values (an untrusted worker's
# 60 MiB of "[0,0,...]" would otherwise be ~1.2 GB of Python objects).
MAX_DECODED_JSON_VALUES = 1 << 22
EPOCH_TICK_MS = 5  # period of the per-engine epoch ticker thread
# Chunks sized for a @wgt.udf (chunk_rows="auto"): a trial on the first rows measures fuel per
# row; each chunk then aims at this share of max_cpu_cycles, within these row bounds.
AUTO_CHUNK_FUEL_SHARE = 0.25
AUTO_CHUNK_TRIAL_ROWS = 1_000
AUTO_CHUNK_MAX_ROWS = 200_000
# The verified-result cache (jobs/cache.py): least recently used entries go past this size.
RESULT_CACHE_MAX_BYTES = 1 << 30
MAX_TABLE_ELEMENTS = 1 << 20  # per table and task; each element is 8 bytes of host memory
TABLE_ELEMENT_BYTES = 8  # what wasmtime 50 stores per funcref / externref table element
# Tables count against max_memory_bytes: together they may take at most this share of it, and
# what a module's tables could reach is taken off what its linear memory may grow to.
TABLE_MEMORY_SHARE = 0.25
HUGEPAGE_INPUT_BYTES = 1 << 20  # inputs from this size get transparent huge pages (Linux)
# WASI host calls run outside wasm, where fuel and the epoch deadline cannot reach: each call
# pays fuel for the host's work, checks the deadline, and does at most so much. Wasm burns
# 5e9-1e10 fuel a second here; a WASI call is 10-30 us of Python, SHAKE-256 ~2-3 ns a byte.
WASI_CALL_FUEL = 100_000
WASI_BYTE_FUEL = 16  # per byte a call makes (random_get) or moves (fd_write, iovecs)
WASI_MAX_CALL_BYTES = 1 << 20  # random_get beyond it is EINVAL; fd_write writes this much
WASI_MAX_IOVECS = 1_024  # IOV_MAX

# The Python runner behind @wgt.udf, built and compiled once per machine: measured on an idle
# 2-core machine (build 7.6 s, compile 7.0 s); its progress bars fill against these.
RUNNER_BUILD_EXPECTED_S = 10.0
RUNNER_COMPILE_EXPECTED_S = 10.0

# --- sandbox: what loading one module may cost the host (ModuleCaps) --------------------------
# Compiling is not linear in a module's size and cannot be interrupted: modules are refused
# past these before compiling, and any module with more than COMPILE_IN_PROCESS_CODE_BYTES of
# code compiles in a child process limited to MAX_COMPILE_SECONDS and MAX_COMPILE_MEMORY_BYTES.
MAX_MODULE_BYTES = 16 << 20
MAX_CODE_BYTES = 4 << 20  # the code section: ~8 s to compile for real C code here
MAX_FUNCTION_BYTES = 256 << 10  # one function body
MAX_FUNCTIONS = 20_000  # ~0.2 ms each to compile even when empty
MAX_TYPES = 10_000
MAX_IMPORTS = 1_000  # WASI preview 1 has 46 functions
MAX_EXPORTS = 10_000
MAX_GLOBALS = 10_000
MAX_TABLES = 16
MAX_COMPILE_SECONDS = 10.0
MAX_COMPILE_MEMORY_BYTES = 1 << 30
COMPILE_IN_PROCESS_CODE_BYTES = 8 << 10  # worst case here: ~0.2 s, ~100 MiB

# --- CES -------------------------------------------------------------------------------------
CES_COMPRESSION_LEVEL = 3
CES_DATA_SHARDS = 8  # any 8 of 12 shards rebuild the data, as in the seed system
CES_PARITY_SHARDS = 4
CES_SEGMENT_BYTES = 4 << 20  # pyeclib's fast range is 1-4 MiB segments
CES_KEY_ENV = "CES_ENCRYPTION_KEY"
CES_MASTER_SECRET_ENV = "CES_MASTER_SECRET"  # hex; the CLI derives --tenant keys from it

# --- verification and trust ------------------------------------------------------------------
TRUST_INITIAL_SCORE = 0.5
TRUST_DECAY = 0.9  # score = DECAY * old + (1 - DECAY) * outcome
QUARANTINE_THRESHOLD = 0.3
PROBATION_SUCCESSES = 3  # agreed probation tasks a quarantined worker needs to return
ADAPTIVE_RUN_LENGTH = 10  # consecutive agreed results before spot-checking with p = 1/N
MAX_EXTRA_REPLICAS = 3  # replicas scheduled beyond the requested ones on disagreement
DATA_DIR_ENV = "WGTLAB_DATA_DIR"  # overrides the user data dir (where the trust ledger lives)
TRUST_LEDGER_FILE = "trust.sqlite3"
LEDGER_BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction

# --- jobs and clusters -----------------------------------------------------------------------
JOB_VERIFICATION: Final = "hash"
JOB_RETRIES = 3
JOB_REPLICAS = 1
CHUNK_MIN_BYTES = 64 << 10
CHUNK_MAX_BYTES = 1 << 20
LOCAL_WORKERS = 4
LOCAL_MAX_IN_FLIGHT = 2  # per local worker: one running, one waiting its turn
WORKER_TASKS_PER_SECOND = 2_000.0  # token bucket refill rate per worker
WORKER_BURST = 200  # token bucket capacity per worker
WORKER_MAX_IN_FLIGHT = 4  # tasks in flight per worker

# --- Dask clusters with mutual TLS (wgtlab/cluster/dask.py, certs.py) --------------------------
DASK_LOCAL_WORKERS = 2  # worker processes DaskCluster.local starts
DASK_CERT_WORKERS = 2  # worker bundles `wgtlab certs init` writes
DASK_MAX_IN_FLIGHT = 8  # tasks queued per Dask worker: hides the round trip through the scheduler
DASK_CONNECT_TIMEOUT_S = 20.0  # how long a client or worker tries to reach the scheduler
DASK_INSTALL_TIMEOUT_S = 120.0  # shipping and compiling a kernel on a worker (a UDF runner: ~s)
DASK_TASK_SLACK_S = 10.0  # added to a remote task's deadline for transfer, queueing, compiling
CERT_VALID_DAYS = 365  # member certificates
CA_VALID_DAYS = 3650  # the cluster CA

# --- verified analytics (wgt.frame) ---------------------------------------------------------------
# Encoded chunk payloads (and their digests) a frame keeps, so a repeated query neither copies nor
# hashes its input again; least recently used go first past this many bytes.
FRAME_PAYLOAD_CACHE_BYTES = 512 << 20
