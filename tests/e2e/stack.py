"""Drive the Docker Compose stack of the e2e test: compose commands, HTTP calls, waits, memory.

Everything goes through public interfaces: the `docker compose` CLI, the published HTTP
ports, and the MySQL client inside the data-db container. Every wait is bounded and says
what it waited for when it gives up.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message names the condition and the last observation."""


class ComposeError(Exception):
    """A `docker compose` command exited non-zero: the test fails with the command's output."""


class ComposeUnavailable(ComposeError):
    """A compose command that ran out of time, or found its container or database not there yet.

    Inside a wait it is "not yet" (one slow `exec` while training loads both cores, a container
    restarting); anything else a command says (an SQL error, a missing service) fails at once.
    """


# What a failed `docker compose exec` prints when the container or the MySQL server is not there yet:
# "is not running" / "is restarting", and the client's 2002, 2003 and 2013 (cannot connect, lost connection).
_NOT_THERE_YET = re.compile(r"is not running|is restarting|ERROR 20(02|03|13)")


class NotReady(Exception):
    """Raised by a probe for an answer that means "not yet" (a 503 while a model loads, say).

    A probe may also return a falsy value; raising lets it say why, which a timeout reports.
    """


# What a wait retries: the service is not listening yet, restarts, or answers too slowly, or a
# probe said "not yet". Anything else (a KeyError in a probe, a 401, a failed assertion) is a
# defect or a real answer, and waiting longer would only hide it behind a timeout.
RETRYABLE: tuple[type[BaseException], ...] = (
    NotReady,
    ComposeUnavailable,
    urllib.error.URLError,  # connection refused, DNS, and read timeouts wrapped by urlopen
    ConnectionError,  # reset, refused, aborted while reading an answer
    TimeoutError,  # a socket timeout outside urlopen's wrapping
    http.client.HTTPException,  # the server hung up mid-answer (RemoteDisconnected, IncompleteRead)
)


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 5.0) -> T:
    """Call ``probe`` until it returns something truthy, at most ``timeout_s``.

    Only ``RETRYABLE`` exceptions count as "not yet" (services restart, ports open late); the
    last one is reported if the wait runs out, so a timeout still explains itself. Any other
    exception is raised at once: a probe bug or a refusal must not burn the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = probe()
        except RETRYABLE as exc:  # remembered, reported on timeout
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            # From the last error, if it was one: pytest then shows where in the probe it came from.
            raise WaitTimeout(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last!r}") from (
                last if isinstance(last, BaseException) else None
            )
        time.sleep(interval_s)


@dataclass
class HttpResult:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    payload: object | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> HttpResult:
    """One HTTP call with the standard library; HTTP errors come back as results, not exceptions."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if payload is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return HttpResult(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, exc.read())


@dataclass
class Compose:
    """`docker compose -p <project>` in the repo root with environment overrides."""

    project: str
    overrides: dict[str, str]

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.overrides}

    def run(self, *args: str, timeout_s: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, *args]
        try:
            result = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeUnavailable(f"`{' '.join(command)}` did not finish within {timeout_s:.0f} s") from exc
        if check and result.returncode != 0:
            error = ComposeUnavailable if _NOT_THERE_YET.search(result.stderr) else ComposeError
            raise error(
                f"`{' '.join(command)}` exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
        return result

    def stream(self, *args: str, timeout_s: float) -> None:
        """Run a compose command with its output printed line by line as it comes, for long builds.

        The caller must make sure pytest does not capture stdout (``-s``, or capture disabled): a
        cold build takes many minutes, and a CI log that shows nothing meanwhile looks hung. On a
        non-zero exit the last lines are repeated in the failure, so it explains itself even
        where the streamed output is far above.
        """
        command = ["docker", "compose", "-p", self.project, "--progress", "plain", *args]
        tail: collections.deque[str] = collections.deque(maxlen=80)
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )

        def pump(output: IO[str]) -> None:
            for line in output:
                tail.append(line)
                print(line, end="", flush=True)

        if process.stdout is None:  # cannot happen with stdout=PIPE; says so instead of a bare assert
            raise RuntimeError(f"`{' '.join(command)}` started without an output pipe")
        # A thread reads, so the main thread can bound the wait even if compose goes silent.
        reader = threading.Thread(target=pump, args=(process.stdout,), name="compose-output", daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            raise ComposeError(f"`{' '.join(command)}` did not finish within {timeout_s:.0f} s") from exc
        except BaseException:  # Ctrl-C: compose must not go on building behind the teardown
            process.kill()
            process.wait()
            raise
        finally:
            reader.join(timeout=30)
        if returncode != 0:
            raise ComposeError(f"`{' '.join(command)}` exited {returncode}; its last lines:\n{''.join(tail)}")

    def services(self) -> list[dict[str, Any]]:
        """`docker compose ps -a` as dicts (Service, State, Health, ExitCode)."""
        out = self.run("ps", "-a", "--format", "json", timeout_s=60).stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def mysql(self, service: str, sql: str) -> list[list[str]]:
        """Run a query as the service's own application account; rows as lists of strings."""
        script = 'mysql -h 127.0.0.1 -u"$MYSQL_USER" -p"$MYSQL_PASSWORD" "$MYSQL_DATABASE" -N -B -e "$0"'
        out = self.run("exec", "-T", service, "sh", "-c", script, sql, timeout_s=60).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def logs(self, services: Sequence[str], tail: int | None = 150) -> str:
        """The services' last ``tail`` log lines (``None``: the whole log, as far as rotation kept it).

        A failing `docker compose logs` raises: an empty string would read as "the line is not
        in the log" to a check, and as "nothing logged" to someone reading a failure.
        """
        lines = "all" if tail is None else str(tail)
        return self.run("logs", "--no-color", "--tail", lines, *services, timeout_s=120).stdout


_SIZE = re.compile(r"([\d.]+)\s*([KMGT]?i?B)")
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_mem(text: str) -> float:
    """Bytes of the "used" half of `docker stats` MemUsage, e.g. "554.6MiB / 23.54GiB"."""
    match = _SIZE.match(text.split("/", maxsplit=1)[0].strip())
    if not match:
        raise ValueError(f"unexpected memory figure {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class MemorySampler:
    """Samples `docker stats --no-stream` for the project's containers in a background thread.

    Records the peak of the stack's total and each container's own peak: the figures the
    issue asks for (what a machine needs to run the stack).
    """

    project: str
    interval_s: float = 5.0
    peak_total_bytes: float = 0.0
    peak_by_container: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        names = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}", "--format", "{{.Names}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        if not names:
            return
        out = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *names],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        total = 0.0
        for line in out.splitlines():
            name, _, usage = line.partition("\t")
            if not usage or usage.startswith("0B") or "--" in usage:
                continue
            used = parse_mem(usage)
            total += used
            self.peak_by_container[name] = max(self.peak_by_container.get(name, 0.0), used)
        self.samples += 1
        self.peak_total_bytes = max(self.peak_total_bytes, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except (subprocess.SubprocessError, ValueError) as exc:
                # A sample lost while containers restart is not a test failure; say so and go on.
                print(f"[e2e] memory sample skipped: {exc}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="docker-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=90)

    def report(self) -> str:
        mib = 1024**2
        top = sorted(self.peak_by_container.items(), key=lambda item: -item[1])
        per = ", ".join(f"{name.removeprefix(self.project + '-')}={used / mib:.0f}" for name, used in top)
        return (
            f"peak stack memory {self.peak_total_bytes / mib:.0f} MiB over {self.samples} samples; "
            f"per-container peaks (MiB): {per}"
        )
