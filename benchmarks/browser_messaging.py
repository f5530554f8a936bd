"""The browser client against the Python peer: open-to-connected, message latency,
file throughput, each next to the same measurement between two Python peers.

Prints one JSON object. Two signaling nodes run as `pagemesh node` processes
on loopback; headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) opens a node's page; the Python peers run in this process, ICE
limited to 127.0.0.1. The baseline is a second Python peer doing the same in
the same run.

    python benchmarks/browser_messaging.py [--messages 200] [--file-mb 20] [--joins 9]

* open_to_connected: from opening the page (module load, key from IndexedDB or
  new, hello, join, ICE, DTLS, SCTP) to its link to the Python peer being open;
  baseline: a new Python `Peer` from connect to `Connected`.
* join_to_connected: the part of that from the join request on (join, ICE
  gathering, checks, DTLS, SCTP); baseline: the Python peer's join to `Connected`.
  The target is ratio_join_browser_vs_python <= 2.
* page_join_to_connected_browser: from the page's own join call, which it makes
  while it still connects to its node (so WebSocket, hello and welcome count too).
* join_breakdown_browser: where the browser's time from its join call goes, one
  median per step in order: node (WebSocket, hello, welcome), seat (the join's
  answer), describe (from `joined` to our signed offer: the page's work on
  `joined`, and any gathering and signing still due), answer (the offer through
  both nodes and the Python peer's answer back), connect (ICE checks, DTLS,
  SCTP, the control channel open), told (open to the page's `connected`); and
  beside them gather (offer set to the description ready to go: its candidates
  there and settled, or gathering complete; before `joined`, off the critical
  path, when the connection was made ahead) and made_ahead (the share of links
  whose connection was made before `joined`).
* join_breakdown_python: the same baseline's seat (join() to its return) and the
  rest (to `Connected`).

The page is watched without polling while it connects (a listener on its peer,
put in before its scripts run), as the Python peers are: a Playwright wait for a
selector runs a script in the page every frame.
* message latency: the receiver's clock minus the envelope's `ts` (the sender's
  clock at sending, milliseconds; one machine, one clock), 10 ms apart.
* file: from the offer arriving to the file verified on disk, browser to Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.peer_messaging import Inbox, ms, percentile
from benchmarks.signaling_load import start_node, stop
from peer.peer import Message, Peer
from peer.webrtc import restrict_host_candidates
from tests.web.conftest import CHROMIUM, CHROMIUM_FLAGS

URL = "https://example.org/browser-bench"


class Clock(Inbox):
    """An Inbox that also keeps, per message, receive time minus the sender's stamp."""

    def __init__(self, room: Any) -> None:
        self.latency: dict[str, float] = {}
        super().__init__(room)

    def note(self, event: Any) -> None:
        if isinstance(event, Message) and not event.mine:
            self.latency[event.text] = time.time() - event.sent_at
        super().note(event)


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": ms(statistics.median(samples)), "p99_ms": ms(percentile(samples, 0.99))}


# Waits without polling the page (Playwright's waits for a selector run a script in it
# every frame while the page joins): before the page's own scripts, a listener on its
# peer for `connected`, as the page's window.pagemesh gets its peer.
WATCH = """(() => {
    const seen = new Set();
    const waiting = new Map();
    const heard = (key) => {
        seen.add(key);
        for (const resolve of waiting.get(key) ?? []) resolve();
        waiting.delete(key);
    };
    window.__connectedTo = (key) => new Promise((resolve) => {
        if (seen.has(key)) resolve();
        else waiting.set(key, [...(waiting.get(key) ?? []), resolve]);
    });
    let ui;
    Object.defineProperty(window, "pagemesh", {
        configurable: true,
        get: () => ui,
        set(value) {
            ui = value;
            let peer = value.peer;
            Object.defineProperty(value, "peer", {
                configurable: true,
                enumerable: true,
                get: () => peer,
                set(next) {
                    peer = next;
                    next?.on((event) => { if (event.type === "connected") heard(event.key); });
                },
            });
        },
    });
})();"""

# The page's times for its link to `key`, in ms since navigation began: the page's join
# call and the member's `connected` (the page, app.js), the join request and its answer
# (Room.timings), the link's steps (Link.timings, performance.now() / 1000 in peer.js).
TIMES = """(key) => {
    const ui = window.pagemesh;
    const ms = (times) => Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v * 1000]));
    const room = [...ui.peer.rooms.values()][0];
    const link = room.links.get(key);
    const { enoughAt, completedAt, settle } = link.gathering;
    // the description could go: the types it needed there and settled, or gathering complete
    const settled = enoughAt === null ? Infinity : enoughAt + settle;
    const ready = Math.min(settled, completedAt ?? Infinity);
    return {
        page_join: ui.joinStartedAt,
        connected: ui.connectedAt[key],
        ...ms(room.timings),
        link: { ...ms(link.timings), ready: ready * 1000 },
    };
}"""
STEPS = [
    ("node", "page_join", "joining"),
    ("seat", "joining", "joined"),
    ("describe", "joined", "described"),
    ("answer", "described", "answered"),
    ("connect", "answered", "open"),
    ("told", "open", "connected"),
    ("gather", "local", "ready"),
]


def steps(times: dict[str, Any]) -> dict[str, float]:
    """The page's times as steps (ms): each from one event to the next."""
    at = {**times, **times["link"]}
    out = {name: at[end] - at[start] for name, start, end in STEPS}
    out["made_ahead"] = 1.0 if at["made"] < at["joined"] else 0.0
    return out


async def browser_page(
    browser: Any, node: str, name: str, member: bytes
) -> tuple[Any, Any, dict[str, Any]]:
    context = await browser.new_context()
    await context.add_init_script(WATCH)
    page = await context.new_page()
    await page.goto(
        f"{node.replace('ws://', 'http://')}/?room={URL}&name={name}", wait_until="commit"
    )
    async with asyncio.timeout(30):
        await page.evaluate("(key) => window.__connectedTo(key)", member.hex())
    times = await page.evaluate(TIMES, member.hex())
    await page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    badge = f'#members li[data-key="{member.hex()}"] .path[data-path=direct]'
    await page.locator(badge).wait_for(timeout=30_000)
    return context, page, times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--file-mb", type=int, default=20)
    parser.add_argument("--joins", type=int, default=9)
    args = parser.parse_args()
    restrict_host_candidates(["127.0.0.1"])
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        first = await start_node(workdir, "n0")
        second = await start_node(workdir, "n1", seed=first)
        nodes = [first.url, second.url]
        here = Peer(workdir / "here", [nodes[1]], accept_files_to=workdir / "inbox")
        await here.__aenter__()
        clock = Clock(await here.join(URL))
        result: dict[str, Any] = {"benchmark": "browser_messaging", "chromium": CHROMIUM}
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_FLAGS
                )
                # open to connected: fresh browser profiles, then fresh Python peers
                opens: dict[str, list[float]] = {"browser": [], "python": []}
                joins: dict[str, list[float]] = {"browser": [], "python": []}
                page_joins: list[float] = []
                breakdown: list[dict[str, float]] = []
                python_steps: dict[str, list[float]] = {"seat": [], "link": []}
                for i in range(args.joins):
                    context, _, times = await browser_page(
                        browser, nodes[0], f"b{i}", here.public_key
                    )
                    opens["browser"].append(times["connected"] / 1000)
                    joins["browser"].append((times["connected"] - times["joining"]) / 1000)
                    page_joins.append((times["connected"] - times["page_join"]) / 1000)
                    breakdown.append(steps(times))
                    await context.close()
                    # Chromium goes on tearing the context down for a while; on a small
                    # machine that would slow the nodes while the Python peer joins
                    await asyncio.sleep(0.5)
                    started = time.perf_counter()
                    other = Peer(workdir / f"p{i}", [nodes[0]])
                    await other.__aenter__()
                    joining = time.perf_counter()
                    inbox = Inbox(await other.join(URL))
                    seated = time.perf_counter()
                    await inbox.wait(lambda inbox=inbox: here.public_key in inbox.connected, 30)
                    python_steps["seat"].append(ms(seated - joining))
                    python_steps["link"].append(ms(inbox.connected[here.public_key] - seated))
                    opens["python"].append(inbox.connected[here.public_key] - started)
                    joins["python"].append(inbox.connected[here.public_key] - joining)
                    inbox.task.cancel()
                    await other.close()
                for who in ("browser", "python"):
                    result[f"open_to_connected_{who}"] = summary(opens[who])
                    result[f"join_to_connected_{who}"] = summary(joins[who])
                for what in ("open", "join"):
                    got = result[f"{what}_to_connected_browser"]["p50_ms"]
                    base = result[f"{what}_to_connected_python"]["p50_ms"]
                    result[f"ratio_{what}_browser_vs_python"] = round(got / base, 3)
                result["page_join_to_connected_browser"] = summary(page_joins)
                result["join_breakdown_browser"] = {
                    name: round(statistics.median(b[name] for b in breakdown), 1)
                    for name, _, _ in STEPS
                } | {"made_ahead": statistics.mean(b["made_ahead"] for b in breakdown)}
                result["join_breakdown_python"] = {
                    name: round(statistics.median(values), 1)
                    for name, values in python_steps.items()
                }

                # message latency, browser -> Python and Python -> Python
                context, page, _ = await browser_page(browser, nodes[0], "sender", here.public_key)
                await page.evaluate(
                    """async (n) => {
                        for (let i = 0; i < n; i++) {
                            await window.pagemesh.room.send(`b${i}`);
                            await new Promise(r => setTimeout(r, 10));
                        }
                    }""",
                    args.messages,
                )
                await clock.wait(lambda: f"b{args.messages - 1}" in clock.latency, 30)
                sender = Peer(workdir / "sender", [nodes[0]])
                await sender.__aenter__()
                out = Inbox(await sender.join(URL))
                await out.wait(lambda: here.public_key in out.connected, 30)
                for i in range(args.messages):
                    await out.room.send(f"p{i}")
                    await asyncio.sleep(0.01)
                await clock.wait(lambda: f"p{args.messages - 1}" in clock.latency, 30)
                b = [clock.latency[f"b{i}"] for i in range(args.messages)]
                p = [clock.latency[f"p{i}"] for i in range(args.messages)]
                result["message_browser_to_python"] = summary(b)
                result["message_python_to_python"] = summary(p)

                # a file, browser -> Python and Python -> Python, offer to verified
                size = args.file_mb * 1_000_000
                source = workdir / "payload.bin"
                source.write_bytes(os.urandom(size))
                before = set(clock.files)
                await page.set_input_files("#file", str(source))
                await clock.wait(lambda: len(set(clock.files) - before) == 1, 600)
                (fid,) = set(clock.files) - before
                browser_mbps = size / (clock.files[fid] - clock.offered[fid]) / 1e6
                before = set(clock.files)
                await out.room.send_file(source)
                await clock.wait(lambda: len(set(clock.files) - before) == 1, 600)
                (fid,) = set(clock.files) - before
                python_mbps = size / (clock.files[fid] - clock.offered[fid]) / 1e6
                result["file_mb"] = args.file_mb
                result["file_browser_to_python_MBps"] = round(browser_mbps, 2)
                result["file_python_to_python_MBps"] = round(python_mbps, 2)
                result["ratio_file_browser_vs_python"] = round(browser_mbps / python_mbps, 3)
                await sender.close()
                await context.close()
                await browser.close()
        finally:
            await here.close()
            await stop(second)
            await stop(first)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
