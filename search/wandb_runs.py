"""Where a trial's story is also told: one W&B run per trial (offline unless this machine is logged in)."""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any


def wandb_mode() -> str:
    """WANDB_MODE if set; online with an API key (env or ~/.netrc); offline otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return "online" if netrc.netrc().authenticators(host) else "offline"
    except (FileNotFoundError, netrc.NetrcParseError):
        return "offline"


class WandbRuns:
    """Opens a W&B run per trial in one project, grouped by study; the config is the trial's flat config."""

    def __init__(self, project: str, group: str, folder: Path):
        self.project, self.group, self.folder = project, group, Path(folder)
        self.mode = wandb_mode()
        self.run = None

    def start(self, name: str, config: dict[str, Any]) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.project, group=self.group, name=name, config=config, mode=self.mode,
                              dir=str(self.folder), reinit="finish_previous",
                              # No git scan, code snapshot or system sampling: a run per trial must start in a
                              # second, and `git describe --dirty` over a large work tree takes many.
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                                      disable_git=True, disable_code=True,
                                                      disable_job_creation=True))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update({**metrics, "state": state})
        self.run.finish(exit_code=0 if state in ("complete", "pruned") else 1)
        self.run = None

    def upload_hint(self) -> str | None:
        if self.mode != "offline":
            return None
        return f"W&B runs were saved offline; upload them with: wandb sync {self.folder / 'wandb'}/offline-run-*"
