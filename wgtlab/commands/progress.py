"""A terminal progress bar fed by job events (the notebook has its own widget)."""

from __future__ import annotations

from typing import Any

from wgtlab.jobs import events as ev


class TextProgress:
    """Counts chunks as they verify or fail, and lies as they are caught; a job subscriber."""

    def __init__(self, total: int | None = None, desc: str = "chunks", **tqdm_options: Any):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="chunk", leave=True, **tqdm_options)
        self.caught = 0
        self.quarantined: list[str] = []

    def __call__(self, event: ev.Event) -> None:
        if event.kind == ev.JOB_DONE:
            self.bar.close()
            return
        if event.kind in (ev.CHUNK_VERIFIED, ev.CHUNK_FAILED):
            self.bar.update(1)
        elif event.kind == ev.TRUST_UPDATED and event.data.get("dissent"):
            self.caught += 1  # late and probation replies that lose count too, as in the result
        elif event.kind == ev.WORKER_QUARANTINED and event.worker:
            self.quarantined.append(event.worker)
        else:
            return
        postfix = {"lies caught": self.caught}
        if self.quarantined:
            postfix["quarantined"] = ",".join(self.quarantined)
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
