"""The browser client against the Python peer: open-to-connected, message latency,
file throughput, each next to the same measurement between two Python peers.

Prints one JSON object. Two signaling nodes run as `pagemesh node` processes
on loopback; headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) opens a node's page; the Python peers run in this process, ICE
limited to 127.0.0.1. The baseline is a second Python peer doing the same in
the same run.

    python benchmarks/browser_messaging.py [--messages 200] [--file-mb 20] [--joins 5]

* open_to_connected: from opening the page (module load, key from IndexedDB or
  new, hello, join, ICE, DTLS, SCTP) to its link to the Python peer being open;
  baseline: a new Python `Peer` from connect to `Connected`.
* join_to_connected: the part of that from the join request on (join, ICE
  gathering, checks, DTLS, SCTP); baseline: the Python peer's join to `Connected`.
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


async def browser_page(browser: Any, node: str, name: str, member: bytes) -> tuple[Any, Any, float]:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{node.replace('ws://', 'http://')}/?room={URL}&name={name}")
    await page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    await page.locator(f'#members li[data-key="{member.hex()}"] .path[data-path=direct]').wait_for(
        timeout=30_000
    )
    # when that link opened and when the join began, in ms since navigation began
    opened, joining = await page.evaluate(
        f"[window.pagemesh.connectedAt['{member.hex()}'], window.pagemesh.joinStartedAt]"
    )
    return context, page, (opened / 1000, (opened - joining) / 1000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--file-mb", type=int, default=20)
    parser.add_argument("--joins", type=int, default=5)
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
                for i in range(args.joins):
                    context, _, (opened, joined) = await browser_page(
                        browser, nodes[0], f"b{i}", here.public_key
                    )
                    opens["browser"].append(opened)
                    joins["browser"].append(joined)
                    await context.close()
                    started = time.perf_counter()
                    other = Peer(workdir / f"p{i}", [nodes[0]])
                    await other.__aenter__()
                    joining = time.perf_counter()
                    inbox = Inbox(await other.join(URL))
                    await inbox.wait(lambda inbox=inbox: here.public_key in inbox.connected, 30)
                    opens["python"].append(inbox.connected[here.public_key] - started)
                    joins["python"].append(inbox.connected[here.public_key] - joining)
                    inbox.task.cancel()
                    await other.close()
                for who in ("browser", "python"):
                    result[f"open_to_connected_{who}"] = summary(opens[who])
                    result[f"join_to_connected_{who}"] = summary(joins[who])

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
