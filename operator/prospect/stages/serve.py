"""Serve models through vLLM's OpenAI-compatible server, as local processes.

The rest of the workflow talks to servers only through the OpenAI API (:class:`Endpoint`), so an
existing server can stand in for one this module launches. On this CPU build of vLLM the server
needs float32, eager mode, a small KV cache and one core per server; those settings come from
:func:`cpu_server_args` and are measured facts, not preferences.

Servers run in their own process group and are stopped when the context ends: on success, on an
exception, on Ctrl-C and on SIGTERM (which the CLI turns into an exception).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from prospect.spec import PromptStyle

__all__ = ["Endpoint", "ServerError", "VllmServer", "cpu_server_args", "discover_model_name"]

log = logging.getLogger("prospect")


class ServerError(RuntimeError):
    """A model server could not be started or reached."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server as the supervisor sees it."""

    role: str
    base_url: str
    model: str
    style: PromptStyle
    max_tokens: int = 256
    temperature: float = 0.0
    display_name: str = ""

    @property
    def label(self) -> str:
        return self.display_name or self.model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_server_args(*, max_model_len: int) -> list[str]:
    """What vLLM's CPU build needs to run at all here (float32 and eager mode)."""
    return ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len)]


def discover_model_name(base_url: str, *, timeout: float = 10.0) -> str:
    """The first model id a server lists, for endpoints given without a model name.

    Raises:
        ServerError: the server is unreachable or lists no model.
    """
    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        models = response.json().get("data", [])
    except (httpx.HTTPError, ValueError) as exc:
        raise ServerError(f"cannot list models at {url}: {exc}") from None
    if not models:
        raise ServerError(f"{url} lists no model")
    return str(models[0]["id"])


@dataclass
class VllmServer:
    """One `vllm.entrypoints.openai.api_server` process serving one model folder."""

    model_path: Path
    served_name: str
    log_path: Path
    cpus: str = "0"
    max_model_len: int = 2048
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_path),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *cpu_server_args(max_model_len=self.max_model_len),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        threads = str(_count_cpus(self.cpus))
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            VLLM_CPU_OMP_THREADS_BIND=self.cpus,
            OMP_NUM_THREADS=threads,
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        return env

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "starting vLLM for %s on port %d (cpus %s, log %s)",
            self.served_name,
            self.port,
            self.cpus,
            self.log_path,
        )
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,
            )

    def wait_ready(self, *, timeout: float) -> None:
        """Poll /health until the server answers, the process dies or the time runs out.

        Raises:
            ServerError: with the last lines of the server's log when it died or never came up.
        """
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(
                    f"vLLM for {self.served_name} exited with code {self.process.returncode} "
                    f"before it was ready; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2.0).status_code == 200:
                    log.info("vLLM for %s is ready at %s", self.served_name, self.base_url)
                    return
            time.sleep(1.0)
        raise ServerError(
            f"vLLM for {self.served_name} was not ready after {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, *, grace: float = 20.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        log.info("stopping vLLM for %s (pid %d)", self.served_name, process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def _count_cpus(spec: str) -> int:
    total = 0
    for part in spec.split(","):
        low, _, high = part.partition("-")
        total += int(high) - int(low) + 1 if high else 1
    return max(total, 1)


def core_plan(count: int) -> list[str]:
    """Split this machine's cores between `count` servers, one disjoint set each.

    Two model processes sharing cores slow each other down tenfold, so each server is bound to
    its own cores; with fewer cores than servers they have to share.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if count <= 1:
        return [f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0])]
    per = max(len(cores) // count, 1)
    plan = []
    for index in range(count):
        chunk = cores[(index * per) % len(cores) :][:per] or [cores[index % len(cores)]]
        plan.append(",".join(str(c) for c in chunk))
    return plan


@contextlib.contextmanager
def running(servers: Sequence[VllmServer], *, timeout: float) -> Iterator[None]:
    """Start every server, wait until all are ready, and stop all of them on the way out."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout=timeout)
        yield
    finally:
        for server in servers:
            server.stop()
