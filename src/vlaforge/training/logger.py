"""Run logs: JSON lines (``log.jsonl``), a human-readable ``train.log``, TensorBoard when it is installed, and
a tqdm bar with loss, rate and ETA. Only rank 0 writes; other ranks get a logger that does nothing.

Every ``log.jsonl`` line has ``event`` (``machine``, ``precision``, ``data``, ``train``, ``val``, ``stage``,
``checkpoint``, ``best``, ``end``, ``interrupted``, ``nonfinite``), ``step`` and ``time`` (seconds since the
run started, this process).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlaforge.fsutil import write_atomic

LOG_FILE, TEXT_LOG, TB_DIR = "log.jsonl", "train.log", "tensorboard"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no nan/inf
    return v


class RunLogger:
    def __init__(self, out: Path, enabled: bool, total_steps: int, start_step: int, tensorboard: bool,
                 progress: bool):
        self.enabled = enabled
        self.out = Path(out)
        self.t0 = time.time()
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.out / LOG_FILE, "a", buffering=1)
        self._text = open(self.out / TEXT_LOG, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
            except ImportError:
                self.info("TensorBoard: not installed (pip install tensorboard); logging to log.jsonl only")
            else:
                self._tb = SummaryWriter(str(self.out / TB_DIR),
                                         purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

    def info(self, msg: str) -> None:
        """A human-readable line: train.log and the terminal (above the bar)."""
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._text.write(f"{stamp} {msg}\n")
        if self._bar is not None:
            self._bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def event(self, event: str, step: int, values: Mapping[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "step": int(step), "time": round(time.time() - self.t0, 3)}
        rec.update({k: _clean(v) for k, v in (values or {}).items()})
        self._jsonl.write(json.dumps(rec) + "\n")
        if self._tb is not None and event in ("train", "val"):  # val keys already carry their "val/" prefix
            for k, v in (values or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def advance(self, steps: int, postfix: Mapping[str, Any] | None = None) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._jsonl.close()
        self._text.close()


def truncate_log(out: Path, step: int) -> None:
    """Before resuming from ``step``: drop log.jsonl lines of later steps (written after the checkpoint by the
    interrupted run), so the log reads as one run. Written atomically."""
    path = Path(out) / LOG_FILE
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if rec.get("step", 0) < step or (rec.get("step", 0) == step
                                         and rec.get("event") not in ("end", "stage")):
            # a "stage" event at the resume step is logged again by the resumed run
            keep.append(line)
    write_atomic(path, "".join(k + "\n" for k in keep))
