"""Several trials at once on one study: one worker process per GPU slot, or per group of GPUs.

Each worker is `python -m search.run` itself, with CUDA_VISIBLE_DEVICES set to its GPU; the study
in the storage is what they share (the parent creates it, so trial 0 is queued exactly once). With
--gpus-per-trial N, each group of N GPUs gets one worker started by `accelerate launch` with N
processes, which train each trial together (data parallel; see models.distributed). Their lines
are shown together, prefixed by the slot; Ctrl-C reaches every worker (accelerate's launcher
passes it on to its processes), and each records its running trial as failed before it exits.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from models import ConfigError
from search.interrupts import TrialInterrupted

MPS_CONTROL = "nvidia-cuda-mps-control"  # ships with NVIDIA's driver


def slots(gpus: list[str], per_gpu: int, per_trial: int = 1) -> list[tuple[str, str]]:
    """(slot name, CUDA_VISIBLE_DEVICES) for every worker: per_gpu workers share each GPU, or per_trial GPUs
    make one worker."""
    if per_trial > 1:
        groups = [",".join(gpus[i:i + per_trial]) for i in range(0, len(gpus), per_trial)]
        return [(f"gpus {group}", group) for group in groups]
    return [(f"gpu {gpu}" + (f".{k}" if per_gpu > 1 else ""), gpu) for gpu in gpus for k in range(per_gpu)]


def worker_command(argv: list[str], per_trial: int, port: int) -> list[str]:
    run = ["-m", "search.run", *argv, "--worker"]
    if per_trial == 1:
        return [sys.executable, *run]
    # --multi_gpu is accelerate's torchrun launcher, also on a machine without CUDA (models.distributed then
    # joins the processes over gloo; --cpu would start one process). --gpu_ids all: CUDA_VISIBLE_DEVICES
    # names the group, and must win over a gpu_ids in the user's accelerate config. The trainer picks its
    # own precision; the last flags only silence accelerate's warning about their defaults.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(per_trial),
            "--main_process_port", str(port), "--gpu_ids", "all", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", *run]


def cpu_threads(processes: int) -> str:
    """OMP_NUM_THREADS for each of `processes` training processes (unless the user set it): the cores
    shared out. Otherwise torch starts a thread per core in every process, and the workers' threads
    outnumber the cores whose Python threads must keep launching GPU work."""
    return str(max(1, (os.cpu_count() or 1) // processes))


def check_gpus(gpus: list[str], text: str | None) -> None:
    """--gpus' own mistakes: an empty entry, a GPU named twice, or an index past the GPUs the driver lists (such
    a worker would see no GPU and train on the CPU, a hundred times slower, without a word)."""
    if text is not None and (not gpus or "" in gpus):
        raise ConfigError(f"--gpus '{text}' has an empty entry; list GPU indices like --gpus 0,1")
    twice = next((gpu for i, gpu in enumerate(gpus) if gpu in gpus[:i]), None)
    if twice is not None:
        raise ConfigError(f"--gpus {text} names GPU {twice} twice; for several workers on one GPU use "
                          f"--gpus {twice} --trials-per-gpu 2")
    count = gpus_on_this_machine()
    past = [gpu for gpu in gpus if gpu.isdigit() and count is not None and int(gpu) >= count]
    if past:
        have = f"GPUs 0 to {count - 1}" if count > 1 else "GPU 0" if count == 1 else "no GPU"
        raise ConfigError(f"--gpus {text}: this machine has {have} (nvidia-smi -L lists them); name those")


def gpus_on_this_machine() -> int | None:
    """How many GPUs NVIDIA's driver lists, or None where it cannot say (no driver: workers train on the CPU)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    return len(lines) if listed.returncode == 0 else None


def check_mps() -> None:
    if shutil.which(MPS_CONTROL) is None:
        raise ConfigError(f"--mps needs {MPS_CONTROL} (NVIDIA's driver utilities) on PATH; install them or drop --mps")


@contextmanager
def cuda_mps():
    """CUDA MPS while the workers run: several processes' kernels then share a GPU at once instead of
    taking turns (more trials/hour than time-slicing: benchmarks/README.md). The daemon is started here
    and stopped after, unless one was running."""
    # A running daemon listens on `control` in its pipe directory (NVIDIA's default: /tmp/nvidia-mps).
    if (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists():
        yield
        return
    started = subprocess.run([MPS_CONTROL, "-d"], capture_output=True, text=True)
    if started.returncode:
        said = (started.stdout + started.stderr).strip() or f"exit {started.returncode}"
        raise ConfigError(f"{MPS_CONTROL} -d failed ({said}); it must run as root: start it yourself or drop --mps")
    try:
        yield
    finally:
        subprocess.run([MPS_CONTROL], input="quit\n", text=True, capture_output=True)


def free_ports(count: int) -> list[int]:
    """Ports free now and distinct from each other: one rendezvous port per accelerate launch."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:  # all held open together, so the system hands out `count` different ports
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


GO = "go\n"  # a worker's stdin: the study exists, open it (an end of file instead: its parent is gone)


class Workers:
    """The worker processes of one study, started before the study exists.

    Starting a worker is mostly importing torch and transformers (seconds, even on a fast host). The parent
    needs them too, to check the input before it creates the study; so the workers start first, import
    them at the same time as the parent, and wait for `run` before they open the study. Leaving the
    `with` block without `run` (the input was wrong, or Ctrl-C) stops them with the study untouched.
    `env` is added to each worker's environment: what must stay out of its command line (the storage URL).
    """

    def __init__(self, argv: list[str], gpus: list[str], per_gpu: int, per_trial: int = 1,
                 env: dict[str, str] | None = None):
        self.procs: list[subprocess.Popen] = []
        self.printers: list[threading.Thread] = []
        self.released = False
        workers = slots(gpus, per_gpu, per_trial)
        threads = cpu_threads(len(workers) * per_trial)
        for index, ((name, devices), port) in enumerate(zip(workers, free_ports(len(workers)))):
            environ = {"OMP_NUM_THREADS": threads, **os.environ, **(env or {}), "CUDA_VISIBLE_DEVICES": devices,
                       "SUMSWEEP_WORKER": name, "SUMSWEEP_WORKER_INDEX": str(index), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(worker_command(argv, per_trial, port), env=environ, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.procs.append(proc)
            self.printers.append(threading.Thread(target=_prefix_lines, args=(proc, name), daemon=True))
            self.printers[-1].start()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if not self.released:
            for proc in self.procs:
                proc.terminate()
            for proc in self.procs:
                proc.wait()

    def run(self) -> int:
        """Let the workers open the study; their exit code once all have ended."""
        self.released = True
        for proc in self.procs:
            try:
                proc.stdin.write(GO)
                proc.stdin.close()
            except BrokenPipeError:  # it has ended already; its exit code says how
                pass
        try:
            codes = [proc.wait() for proc in self.procs]
        except KeyboardInterrupt:
            for proc in self.procs:  # they run in their own sessions, so the terminal's Ctrl-C reaches us alone
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc in self.procs:
                proc.wait()
            raise TrialInterrupted from None  # each worker has recorded its running trial as failed
        finally:
            for printer in self.printers:
                printer.join(timeout=5)
        return exit_code(codes)


def wait_to_go() -> bool:
    """In a worker: wait for its parent's word to open the study. False if the parent ended without it."""
    return sys.stdin.readline() == GO


def exit_code(codes: list[int]) -> int:
    """The first failure among the workers' exit codes; one killed by signal N (-N) as 128 + N, as a shell says."""
    failed = next((code for code in codes if code != 0), 0)
    return 128 - failed if failed < 0 else failed


def _prefix_lines(proc: subprocess.Popen, name: str) -> None:
    for line in proc.stdout:
        print(f"[{name}] {line}", end="", flush=True)
