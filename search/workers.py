"""Several trials at once on one study: one worker process per GPU slot.

Each worker is `python -m search.run` itself, with CUDA_VISIBLE_DEVICES set to its GPU; the study
in the storage is what they share (create it first, so trial 0 is queued exactly once). Their
lines are shown together, prefixed by the slot; Ctrl-C reaches every worker, and each records its
running trial as failed before it exits.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def slots(gpus: list[str], per_gpu: int) -> list[tuple[str, str]]:
    """(slot name, CUDA_VISIBLE_DEVICES) for every worker: per_gpu workers share each GPU."""
    return [(f"gpu {gpu}" + (f".{k}" if per_gpu > 1 else ""), gpu) for gpu in gpus for k in range(per_gpu)]


def run_workers(argv: list[str], gpus: list[str], per_gpu: int) -> int:
    procs: list[subprocess.Popen] = []
    printers = []
    for name, gpu in slots(gpus, per_gpu):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "SUMSWEEP_WORKER": name, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "search.run", *argv, "--worker"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        printers.append(threading.Thread(target=_prefix_lines, args=(proc, name), daemon=True))
        printers[-1].start()
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        for proc in procs:  # they run in their own sessions, so the terminal's Ctrl-C reaches us alone
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait()
        raise
    finally:
        for printer in printers:
            printer.join(timeout=5)
    return max(codes)


def _prefix_lines(proc: subprocess.Popen, name: str) -> None:
    for line in proc.stdout:
        print(f"[{name}] {line}", end="", flush=True)
