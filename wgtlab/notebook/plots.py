"""The trust and verification figures, where notebooks import them from; they are drawn in
``wgtlab.views.plots``, below the notebook and the CLI, which both show them."""

from __future__ import annotations

from wgtlab.views.plots import (
    OKABE_ITO,
    OUTCOME_COLOURS,
    OUTCOMES,
    trust_timeline,
    verification_grid,
)

__all__ = ["OKABE_ITO", "OUTCOMES", "OUTCOME_COLOURS", "trust_timeline", "verification_grid"]
