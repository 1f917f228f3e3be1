"""Soak: a steady mixed load on `papersift serve --workers 2` for many minutes, with an
ingest and a digest run in the middle; 5xx (want 0), latency and memory per worker.

The home is the packaged demo corpus (`papersift demo --no-serve`: 4,186 real arXiv papers
and the seed pages, embeddings precomputed). Open-loop load at ``--rate`` requests/s (each
timed from its scheduled start): API and page searches, paper pages and JSON, trending,
API upvotes and API sign-ups, from 16 loopback addresses (127.0.2.x) each with its own
visitors, so the per-address limits act as they would for 16 users (their 429s are counted
apart, as answers). At a third of the run `papersift ingest` adds 1,000 new arXiv papers
(embedded and indexed while serving); at half, `papersift digest send` mails 40 confirmed
subscribers through a real aiosmtpd on loopback. Every worker's RSS is sampled every 15 s.

Usage: python bench/soak.py [--minutes 30] [--rate 50] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import synth
from web import free_port, make_queries

PAPERSIFT = Path(sys.executable).with_name("papersift")
CORPUS = Path(os.environ.get("PAPERSIFT_SHARED", report.ROOT.parent / "shared")) / "corpora"
CONNECTIONS = 48
RECONNECT = 40  # requests per connection before a client goes away and a new one comes
LATE = 30.0  # a request this overdue is dropped (counted) so a starved run still ends on time
ADDRESSES = [f"127.0.2.{n}" for n in range(1, 17)]
MIX = {  # kind: share of requests
    "search api": 0.30,
    "search page": 0.12,
    "paper page": 0.25,
    "paper api": 0.08,
    "trending": 0.07,
    "vote": 0.12,
    "sign-up": 0.06,
}


def env_for(home: Path, smtp_url: str) -> dict[str, str]:
    env = {**os.environ, "PAPERSIFT_HOME": str(home), "PAPERSIFT_SMTP_URL": smtp_url}
    env.pop("PAPERSIFT_DB", None)
    return env


def prepare(home: Path, env: dict[str, str], extra: Path) -> None:
    """The demo home, 40 confirmed subscribers, and a file of 1,000 papers it lacks."""
    subprocess.run([str(PAPERSIFT), "demo", "--no-serve"], env=env, check=True, capture_output=True)
    from papersift.digest import subscriptions as subs
    from papersift.digest import tokens
    from papersift.digest.validation import Preferences
    from papersift.settings import load_settings
    from papersift.store.db import Database

    settings = load_settings(home)
    db = Database(settings.db_url)
    topics = ["language models", "graph neural networks", "reinforcement learning", "vision"]
    for n in range(40):
        result = subs.subscribe(db, f"reader{n}@soak.example.org", Preferences(topics=topics))
        link = tokens.confirm_url(settings, result.subscriber.id, result.subscriber.email)
        subs.confirm(db, settings, parse_qs(urlsplit(link).query)["token"][0])
    db.dispose()
    taken = 0
    with gzip.open(CORPUS / "arxiv-236k.jsonl.gz", "rt") as src, extra.open("w") as out:
        for n, line in enumerate(src):
            if n % 97 == 0:  # spread over the corpus, mostly outside the demo's days
                out.write(line)
                taken += 1
                if taken == 1000:
                    break


# Written into the run's temp folder and put on the server's PYTHONPATH: every served
# worker appends a line every 15 s with what its RSS is made of (Python's own blocks,
# glibc's heap in use and free-but-kept, mmapped), so growth can be told apart: objects
# kept by Python code, allocator fragmentation, or native memory (indexes, model).
PROBE = """
import os
out = os.environ.get("SOAK_PROBE")
if out and b"spawn_main" in open("/proc/self/cmdline", "rb").read():
    import ctypes, json, sys, threading, time
    class _Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Info
    def _probe():
        while True:
            time.sleep(15)
            m = libc.mallinfo2()
            line = {"pid": os.getpid(), "t": time.time(), "py_blocks": sys.getallocatedblocks(),
                    "heap_mb": m.arena / 2**20, "in_use_mb": m.uordblks / 2**20,
                    "free_mb": m.fordblks / 2**20, "mmap_mb": m.hblkhd / 2**20,
                    "threads": threading.active_count()}
            with open(out, "a") as f:
                f.write(json.dumps(line) + "\\n")
    threading.Thread(target=_probe, daemon=True).start()
"""


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        pass
    return out


def workers(pid: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    out = []
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(child)
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class SmtpSink:
    """A real aiosmtpd server on loopback that counts what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.count = 0
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                with sink.lock:
                    sink.count += 1
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    method: str,
    path: str,
    cookie: str | None,
    body: bytes | None = None,
) -> tuple[int, str | None]:
    """One keep-alive HTTP/1.1 request; (status, a ps_visitor cookie it set)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*"]
    if cookie:
        lines.append(f"Cookie: ps_visitor={cookie}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    rows = head.decode("latin-1").split("\r\n")
    status = int(rows[0].split()[1])
    length, chunked, close, new_cookie = None, False, False, None
    for row in rows[1:]:
        name, _, value = row.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and value == "chunked":
            chunked = True
        elif name == "connection" and value == "close":
            close = True
        elif name == "set-cookie" and value.startswith("ps_visitor="):
            new_cookie = value.split(";", 1)[0].split("=", 1)[1]
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    if close:
        raise ConnectionResetError("closed by the server")
    return status, new_cookie


class Load:
    """The open-loop mixed load and what it measured."""

    def __init__(self, base: str, ids: list[str], queries: list[str], seed: int = 7) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.ids, self.queries = ids, queries
        self.rng = random.Random(seed)
        self.latency: dict[str, list[float]] = {k: [] for k in MIX}
        self.statuses: dict[str, dict[int, int]] = {k: {} for k in MIX}
        self.errors = 0
        self.late = 0  # requests not sent because they were already LATE s overdue
        self.signups = 0

    def pick(self, i: int) -> tuple[str, str, str, bytes | None]:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        pid = self.rng.choice(self.ids)
        q = httpx.QueryParams({"q": self.rng.choice(self.queries)})
        if kind == "search api":
            return kind, "GET", f"/api/v1/search?{q}", None
        if kind == "search page":
            return kind, "GET", f"/search?{q}", None
        if kind == "paper page":
            return kind, "GET", f"/papers/{pid}", None
        if kind == "paper api":
            return kind, "GET", f"/api/v1/papers/{pid}", None
        if kind == "trending":
            window = self.rng.choice(["day", "week", "month"])
            return kind, "GET", f"/api/v1/trending?window={window}", None
        if kind == "vote":
            return kind, "POST", f"/api/v1/papers/{pid}/upvote", b""
        self.signups += 1
        email = f"soak{i}@d{i % 700}.soak.example.org"
        return kind, "POST", "/api/v1/subscriptions", json.dumps({"email": email}).encode()

    async def run(self, rate: float, seconds: float) -> None:
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

        async def worker(n: int) -> None:
            source = ADDRESSES[n % len(ADDRESSES)]
            conn = None
            cookie: str | None = None
            served = 0
            while (item := await queue.get()) is not None:
                i, due = item
                if time.perf_counter() - due > LATE:  # the server fell far behind: the run
                    self.late += 1  # must still end on time, so this one is not sent
                    continue
                served += 1
                if conn is not None and served % RECONNECT == 0:  # clients come and go
                    conn[1].close()
                    conn = None
                kind, method, path, body = self.pick(i)
                if cookie is None and kind == "vote":
                    kind, method, path, body = "paper page", "GET", f"/papers/{self.ids[0]}", None
                for _attempt in range(2):
                    try:
                        if conn is None:
                            conn = await asyncio.open_connection(
                                self.host, self.port, local_addr=(source, 0)
                            )
                        status, new = await asyncio.wait_for(
                            _request(*conn, self.host, method, path, cookie, body), 30
                        )
                        cookie = new or cookie
                        break
                    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                        if conn is not None:
                            conn[1].close()
                        conn = None
                else:
                    self.errors += 1
                    continue
                counts = self.statuses[kind]
                counts[status] = counts.get(status, 0) + 1
                self.latency[kind].append(time.perf_counter() - due)
            if conn is not None:
                conn[1].close()

        workers = [asyncio.create_task(worker(n)) for n in range(CONNECTIONS)]
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, start + i / rate))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)


def memory_breakdown(probe_log: Path) -> list[str]:
    """Per worker, what its memory was made of after warm-up, at half time and at the end."""
    by_pid: dict[int, list[dict]] = {}
    try:
        for line in probe_log.read_text().splitlines():
            item = json.loads(line)
            by_pid.setdefault(item["pid"], []).append(item)
    except (OSError, ValueError):
        return []
    lines = [
        "",
        "What each worker's memory was made of (probe inside the worker: Python's allocated "
        "blocks, glibc heap in use / free but kept / mmapped), first, middle and last sample:",
        "",
        "| worker | Python blocks (k) | heap in use MB | heap free MB | mmapped MB | threads |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, samples in enumerate(by_pid.values(), 1):
        picks = [samples[0], samples[len(samples) // 2], samples[-1]]

        def show(key: str, scale: float = 1.0, picks: list[dict] = picks) -> str:
            return " / ".join(f"{p[key] / scale:.0f}" for p in picks)

        lines.append(
            f"| {n} | {show('py_blocks', 1000)} | {show('in_use_mb')} | {show('free_mb')} "
            f"| {show('mmap_mb')} | {show('threads')} |"
        )
    return lines


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--probe-log", help="keep the workers' memory probe lines here")
    args = parser.parse_args()
    seconds = args.minutes * 60
    sink = SmtpSink()
    sink.controller.start()
    with tempfile.TemporaryDirectory(prefix="papersift-soak-") as tmp:
        home = Path(tmp) / "home"
        env = env_for(home, sink.url)
        extra = Path(tmp) / "new-papers.jsonl"
        print("preparing the demo home ...", flush=True)
        prepare(home, env, extra)
        port = free_port()
        server_log = (Path(tmp) / "serve.log").open("wb")  # a pipe would fill and block it
        probe_dir = Path(tmp) / "probe"
        probe_dir.mkdir()
        (probe_dir / "sitecustomize.py").write_text(PROBE)
        probe_log = Path(args.probe_log or Path(tmp) / "probe.jsonl")
        serve_env = {**env, "PYTHONPATH": str(probe_dir), "SOAK_PROBE": str(probe_log)}
        proc = subprocess.Popen(
            [str(PAPERSIFT), "serve", "--port", str(port), "--workers", str(args.workers)],
            env=serve_env,
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            start_new_session=True,  # its workers are stopped with it, whatever happens
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 900  # a starved machine starts workers slowly
        while True:
            try:
                if httpx.get(f"{base}/api/v1/trending?k=100", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, 9)
                raise SystemExit("server did not come up")
            time.sleep(0.5)
        print(f"server up on {base}", flush=True)
        ids = [
            p["id"]
            for p in httpx.get(f"{base}/api/v1/trending?window=month&k=100").json()["results"]
        ]
        queries = make_queries(synth.load_seed_text().titles, seed=11)
        time.sleep(20)  # the workers' warm-up
        rss: dict[int, list[tuple[float, float]]] = {}
        events: list[str] = []
        done = threading.Event()
        t0 = time.monotonic()

        loads: list[float] = []

        def sampler() -> None:
            while not done.is_set():
                for w in workers(proc.pid):
                    value = rss_mb(w)
                    if value is not None:
                        rss.setdefault(w, []).append((time.monotonic() - t0, value))
                loads.append(os.getloadavg()[0])
                done.wait(15)

        def side_jobs() -> None:
            if done.wait(seconds / 3):
                return
            began = time.monotonic()
            ran = subprocess.run(
                [str(PAPERSIFT), "ingest", str(extra), "-q"], env=env, capture_output=True
            )
            events.append(
                f"ingest of 1,000 new papers at {began - t0:.0f} s: exit {ran.returncode}, "
                f"{time.monotonic() - began:.0f} s"
            )
            if done.wait(max(0.0, seconds / 2 - (time.monotonic() - t0))):
                return
            began = time.monotonic()
            before = sink.count
            ran = subprocess.run([str(PAPERSIFT), "digest", "send"], env=env, capture_output=True)
            events.append(
                f"digest send at {began - t0:.0f} s: exit {ran.returncode}, "
                f"{sink.count - before} mails to aiosmtpd, {time.monotonic() - began:.0f} s"
            )

        threads = [threading.Thread(target=sampler), threading.Thread(target=side_jobs)]
        for t in threads:
            t.start()
        load = Load(base, ids, queries)
        print(f"soaking {args.minutes:g} min at {args.rate:g} req/s ...", flush=True)
        try:
            asyncio.run(load.run(args.rate, seconds))
        finally:
            done.set()
            for t in threads:
                t.join()
            proc.terminate()
            try:
                proc.wait(timeout=60)
            finally:
                os.killpg(proc.pid, 9)  # no worker outlives the run
                server_log.close()
            breakdown = memory_breakdown(probe_log)
    sink.controller.stop()
    lines = summary(args, load, rss, events, sink.count, loads, breakdown)
    print("\n".join(lines))
    if not args.no_write:
        report.write_section("bench/soak.py", lines)


def summary(
    args: argparse.Namespace,
    load: Load,
    rss: dict[int, list[tuple[float, float]]],
    events: list[str],
    mails: int,
    loads: list[float],
    breakdown: list[str],
) -> list[str]:
    every = [v for values in load.latency.values() for v in values]
    fives = sum(n for counts in load.statuses.values() for s, n in counts.items() if s >= 500)
    total = sum(sum(c.values()) for c in load.statuses.values())
    lines = [
        "## Soak (bench/soak.py)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine()}; 1-min load average "
        f"during the run min {min(loads, default=0):.1f}, median "
        f"{float(np.median(loads)) if loads else 0:.1f}, max {max(loads, default=0):.1f} "
        "(the served workers and this load generator included).",
        f"`papersift serve --workers {args.workers}` on the demo corpus, {args.minutes:g} min at "
        f"{args.rate:g} requests/s mixed, open loop from 16 loopback addresses; "
        + "; ".join(events)
        + f"; mails received by aiosmtpd during the run (sign-up confirmations and digests): "
        f"{mails}.",
        "",
        f"**{total} answers, {fives} with 5xx, {load.errors} connection errors, "
        f"{load.late} not sent (over {LATE:.0f} s overdue); "
        f"p50 {pct(every, 50):.1f} ms, p99 {pct(every, 99):.1f} ms, max {pct(every, 100):.0f} ms** "
        "(from the scheduled start).",
        "",
        "| requests | answers | statuses | p50 ms | p99 ms |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for kind in MIX:
        counts = load.statuses[kind]
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
        lines.append(
            f"| {kind} | {sum(counts.values())} | {shown} | {pct(load.latency[kind], 50):.1f} "
            f"| {pct(load.latency[kind], 99):.1f} |"
        )
    lines += [
        "",
        f"Worker processes seen: {len(rss)} (a worker restarted by uvicorn shows as a new row).",
        "",
        "| worker | RSS after warm-up MB | at the end MB | max MB | growth |",
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    for n, samples in enumerate(rss.values(), 1):
        if not samples:
            continue
        first, last = samples[0][1], samples[-1][1]
        peak = max(v for _, v in samples)
        half = [v for t, v in samples if t >= samples[-1][0] / 2]
        lines.append(
            f"| {n} | {first:.0f} | {last:.0f} | {peak:.0f} | {last - first:+.0f} MB "
            f"({(last - first) / first * 100:+.1f}%; second half {min(half):.0f}-{max(half):.0f}) |"
        )
    marks = list(range(0, int(args.minutes * 60) + 1, 300))
    lines += [
        "",
        "RSS MB per worker over time (nearest sample to each 5-minute mark):",
        "",
        "| worker | " + " | ".join(f"{m // 60} min" for m in marks) + " |",
        "| --- | " + " | ".join("---:" for _ in marks) + " |",
    ]
    for n, samples in enumerate(rss.values(), 1):
        if samples:
            near = [min(samples, key=lambda s, m=m: abs(s[0] - m))[1] for m in marks]
            lines.append(f"| {n} | " + " | ".join(f"{v:.0f}" for v in near) + " |")
    lines += breakdown
    lines += verdict(fives, rss)
    lines += [
        "",
        "429s are the per-address vote and sign-up limits doing their job (16 addresses "
        "sending 12% votes and 6% sign-ups is far past what 16 people would); they are "
        "answers, not failures.",
    ]
    return lines


def verdict(fives: int, rss: dict[int, list[tuple[float, float]]]) -> list[str]:
    """Issue 12's soak targets: no 5xx, and memory flat per worker. Caches (search results,
    paper cards, stems) and the mid-run ingest fill the first half, so flat is judged on the
    second half: at most 1 MB/min a worker (a leak of that size would double a worker in a
    week of uptime; the first soaks grew 2-3 MB/min for 45 minutes)."""
    rates = []
    for samples in rss.values():
        half = [(t, v) for t, v in samples if t >= samples[-1][0] / 2] if samples else []
        if len(half) >= 2 and half[-1][0] > half[0][0]:
            rates.append((half[-1][1] - half[0][1]) / ((half[-1][0] - half[0][0]) / 60))
    worst = max(rates, default=float("nan"))
    flat = bool(rates) and worst <= 1.0
    return [
        "",
        f"Targets: 5xx = 0: **{'met' if fives == 0 else 'missed'}** ({fives}); memory flat "
        f"(second half <= 1 MB/min a worker): **{'met' if flat else 'missed'}** "
        f"(worst worker {worst:+.2f} MB/min).",
    ]


if __name__ == "__main__":
    main()
