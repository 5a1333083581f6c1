"""Reed-Solomon erasure coding over pyeclib's ISA-L backend: k data + m parity fragments, any k
of which rebuild the payload. Every pyeclib failure comes out as a typed wgtlab error.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from wgtlab.errors import ConfigError, IntegrityError, NotEnoughShardsError

MAX_TOTAL_SHARDS = 255  # GF(2^8): at most 255 distinct rows in the coding matrix

# Codec ids, as written in shard headers.
ISA_L_RS_VAND = 1
ISA_L_RS_CAUCHY = 2
CODEC_NAMES = {ISA_L_RS_VAND: "isa_l_rs_vand", ISA_L_RS_CAUCHY: "isa_l_rs_cauchy"}


def vandermonde_is_mds(data_shards: int, parity_shards: int) -> bool:
    """Whether ISA-L's Vandermonde matrix rebuilds the data from *every* choice of k fragments.

    ISA-L's matrix is not invertible for every sub-matrix when k and m grow (e.g. 6 + 6 loses
    some 6-fragment patterns). Its documentation lists the pairs that need no adjustment.
    """
    k, m = data_shards, parity_shards
    return (
        k <= 3
        or (k == 4 and k + m <= 25)
        or (k == 5 and k + m <= 10)
        or m <= 3
        or (k <= 21 and m == 4)
    )


def choose_codec(data_shards: int, parity_shards: int) -> int:
    """``isa_l_rs_vand`` wherever it is proven MDS, else ``isa_l_rs_cauchy`` (always MDS)."""
    return ISA_L_RS_VAND if vandermonde_is_mds(data_shards, parity_shards) else ISA_L_RS_CAUCHY


def validate_shard_counts(data_shards: object, parity_shards: object) -> tuple[int, int]:
    """The counts as ints, or a ``ConfigError`` saying which bound was broken."""
    for name, value in (("data_shards", data_shards), ("parity_shards", parity_shards)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be an int, not {type(value).__name__}")
        if value < 1:
            raise ConfigError(
                f"{name} must be at least 1, got {value}: CES needs at least one data shard "
                "and one parity shard"
            )
    assert isinstance(data_shards, int) and isinstance(parity_shards, int)
    if data_shards + parity_shards > MAX_TOTAL_SHARDS:
        raise ConfigError(
            f"data_shards + parity_shards must be at most {MAX_TOTAL_SHARDS} (Reed-Solomon over "
            f"GF(2^8)), got {data_shards} + {parity_shards} = {data_shards + parity_shards}"
        )
    return data_shards, parity_shards


@dataclass(frozen=True)
class ErasureCodec:
    """``data_shards`` + ``parity_shards`` Reed-Solomon; ``codec`` is a CODEC_NAMES key.

    A pyeclib driver is not documented as thread-safe, so each thread gets its own (cheap).
    """

    data_shards: int
    parity_shards: int
    codec: int = 0  # 0: choose_codec(data_shards, parity_shards)

    def __post_init__(self) -> None:
        validate_shard_counts(self.data_shards, self.parity_shards)
        if self.codec == 0:
            object.__setattr__(self, "codec", choose_codec(self.data_shards, self.parity_shards))
        if self.codec not in CODEC_NAMES:
            raise ConfigError(f"unknown erasure codec id {self.codec}; known: {CODEC_NAMES}")
        object.__setattr__(self, "_local", threading.local())

    @property
    def total_shards(self) -> int:
        return self.data_shards + self.parity_shards

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def _driver(self):  # -> pyeclib.ec_iface.ECDriver
        local = self._local  # type: ignore[attr-defined]
        driver = getattr(local, "driver", None)
        if driver is None:
            from pyeclib.ec_iface import ECDriver

            try:
                driver = ECDriver(k=self.data_shards, m=self.parity_shards, ec_type=self.codec_name)
            except Exception as exc:  # pyeclib raises its own tree, or ValueError
                raise ConfigError(
                    f"pyeclib cannot build a {self.codec_name} codec for {self.data_shards} data "
                    f"+ {self.parity_shards} parity shards: {exc}"
                ) from exc
            local.driver = driver
        return driver

    def encode(self, payload: bytes) -> list[bytes]:
        """``total_shards`` fragments of ``payload`` (each with pyeclib's own small header)."""
        try:
            return self._driver().encode(bytes(payload))
        except Exception as exc:
            raise IntegrityError(f"erasure encoding failed: {exc}") from exc

    def decode(self, fragments: Mapping[int, bytes]) -> bytes:
        """The payload from fragments keyed by index; needs at least ``data_shards`` of them.

        The caller passes only fragments it has checked (pyeclib does not detect a damaged
        fragment body); anything pyeclib still refuses becomes an ``IntegrityError``.
        """
        usable = {i: f for i, f in fragments.items() if 0 <= i < self.total_shards}
        if len(usable) < self.data_shards:
            raise NotEnoughShardsError(
                f"{len(usable)} usable fragments, {self.data_shards} needed",
                usable=len(usable),
                needed=self.data_shards,
            )
        # Data fragments first: with all k of them present pyeclib only concatenates.
        chosen = [usable[i] for i in sorted(usable)[: self.data_shards]]
        try:
            return self._driver().decode(chosen)
        except Exception as exc:
            raise IntegrityError(
                f"erasure decoding failed although {len(chosen)} fragments passed their "
                f"checksums: {exc}"
            ) from exc
