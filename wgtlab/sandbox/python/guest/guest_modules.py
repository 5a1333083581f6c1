"""Standard-library modules a @wgt.udf function may import inside the sandbox.

Shared by the guest runner (which imports them all at build time: only modules imported then
exist at run time) and the host (which rejects other imports before any chunk runs).
"""

GUEST_MODULES = (
    # numbers and statistics
    "math",
    "cmath",
    "statistics",
    "decimal",
    "fractions",
    "numbers",
    "random",  # seeded per task, so replicas agree
    # text
    "re",
    "string",
    "textwrap",
    "unicodedata",
    "difflib",
    "html",
    "urllib",
    "urllib.parse",
    "ipaddress",
    "keyword",
    "fnmatch",
    "colorsys",
    # data formats
    "json",
    "csv",
    "io",
    "base64",
    "binascii",
    "struct",
    "zlib",
    "gzip",
    "hashlib",
    "hmac",
    "uuid",  # uuid3 / uuid5 only: there is no entropy for uuid4
    # dates (no clock: now() and today() refuse, parsing and arithmetic work)
    "datetime",
    "calendar",
    "time",
    # containers and functional tools
    "collections",
    "collections.abc",
    "itertools",
    "functools",
    "operator",
    "heapq",
    "bisect",
    "array",
    "copy",
    "dataclasses",
    "enum",
    "typing",
    "types",
    "abc",
    "contextlib",
    "pprint",
    "reprlib",
    "warnings",
    "graphlib",
    # path-string helpers and the interpreter (their OS calls refuse inside the sandbox)
    "os",
    "os.path",
    "sys",
    "builtins",
)
