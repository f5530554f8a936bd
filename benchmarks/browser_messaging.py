"""The browser client against the Python peer: open-to-connected, message latency,
file throughput, each next to the same measurement between two Python peers.

Prints one JSON object. Two signaling nodes run as `pagemesh node` processes
on loopback; headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) opens a node's page; the Python peers run in this process, ICE
limited to 127.0.0.1. The baseline is a second Python peer doing the same in
the same run.

    python benchmarks/browser_messaging.py [--messages 200] [--file-mb 20] [--joins 9]
        [--reference TREE]

Each of the --joins rounds opens the node's page, then a new Python peer, then the
extension's panel, one after the other (so a slower moment of a shared machine
falls on all three).

* open_to_connected: from opening the page (module load, key from IndexedDB or
  new, hello, join, ICE, DTLS, SCTP) to its link to the Python peer being open;
  baseline: a new Python `Peer` from connect to `Connected`.
* join_to_connected: the part of that from the join request on (join, ICE
  gathering, checks, DTLS, SCTP); baseline: the Python peer's join to `Connected`.
  The target is ratio_join_browser_vs_python <= 2.
* page_join_to_connected_browser: from the page's own join call, which it makes
  while it still connects to its node (so WebSocket, hello and welcome count too).
* page_loaded_browser: from opening the page to its document parsed and its module
  graph run (DOMContentLoaded's end): the share of open_to_connected that is the
  page's HTML and modules.
* join_breakdown_browser: where the browser's time from its join call goes, one
  median per step in order: node (WebSocket, hello, welcome), seat (the join's
  answer), describe (from `joined` to our signed offer: the page's work on
  `joined`, and any gathering and signing still due; 0 when the offer went before
  the seat, to a member the node named early, docs/protocol.md 2.5.3), answer (the
  offer through both nodes and the Python peer's answer back, from `joined` at the
  earliest), connect (ICE checks, DTLS,
  SCTP, the control channel open), told (open to the page's `connected`); and
  beside them set (the connection made to its offer set: certificate, createOffer,
  setLocalDescription; the page makes it when it opens and sets it at once when
  host candidates are all it needs, else once its node's welcome names the servers),
  gather (offer set to the description ready to go: its candidates there and
  settled, or gathering complete; before `joined`, off the critical path, when the
  connection was made ahead) and made_ahead (the share of links
  whose connection was made before `joined`).
* join_breakdown_python: the same baseline's seat (join() to its return) and the
  rest (to `Connected`).
* with --reference TREE (another source tree, e.g. `git archive OLD | tar -x -C TREE`):
  a third node runs from TREE, on the same mesh, and each round also opens its page
  in a fresh profile: open_to_connected_reference, page_join_to_connected_reference,
  page_loaded_reference, join_to_connected_reference (its ratio to the Python peer's:
  ratio_join_reference_vs_python)
  and ratio_open_browser_vs_reference (this tree's page over TREE's, p50), so a
  change to the page is measured before and after in one invocation.
* panel_open_to_connected_extension: the extension (`pagemesh extension build`,
  loaded unpacked into a persistent Chromium profile with --load-extension,
  headless new mode): a web page on 127.0.0.1 open in a tab, a Python peer (on the
  other node) already in that page's room, then the panel opened, from its
  navigation to its link to that peer open. The panel is opened as a tab
  (chrome-extension://ID/extension/panel.html), which follows the window's most
  recently active web page; a side panel runs the same page, but headless Chromium
  has no side panel to open. Its settings allow local addresses (the page is on
  loopback) and forget learned nodes before each opening; the identity is the
  extension's own, kept between openings, as a person's is (the first opening, which
  makes it, is panel_first_open_ms and not among the samples). Each panel is closed
  and the Python peer has seen it leave before the next round.
  ratio_panel_open_vs_python: its p50 over open_to_connected_python's;
  panel_join_to_connected_extension and ratio_panel_join_vs_python: from its join
  request, against join_to_connected_python.

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

from aiohttp import web

from benchmarks.peer_messaging import Inbox, ms, percentile
from benchmarks.signaling_load import CONFIG, NODE, STARTED, Proc, start_node, stop
from pagemesh.extension import build as build_extension
from peer.peer import Connected, MemberLeft, Message, Peer
from peer.webrtc import restrict_host_candidates
from signaling.rooms import canonical_url
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
    return {
        "p50_ms": ms(statistics.median(samples)),
        "p90_ms": ms(percentile(samples, 0.9)),
        "p99_ms": ms(percentile(samples, 0.99)),
    }


class Members(Inbox):
    """An Inbox that also notes when each member left."""

    def __init__(self, room: Any) -> None:
        self.left: dict[bytes, float] = {}
        super().__init__(room)

    def note(self, event: Any) -> None:
        if isinstance(event, MemberLeft):
            self.left[event.key] = time.perf_counter()
        elif isinstance(event, Connected):
            self.left.pop(event.key, None)
            self.connected.pop(event.key, None)  # each opening connects anew
        super().note(event)


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
        loaded: performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd,
        page_join: ui.joinStartedAt,
        connected: ui.connectedAt[key],
        ...ms(room.timings),
        link: { ...ms(link.timings), ready: ready * 1000 },
        sign: ms(ui.peer.node?.signTimes ?? {}),
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
    ("set", "made", "local"),
]
# The seat's presence signature (docs/protocol.md 3.3) as the page sees it: the join
# sent to the node's `sign` heard, its frame waiting its turn, checked, signed and
# sent, then on to `joined`.
SIGN_STEPS = [
    ("to_sign", "joining", "heard"),
    ("queued", "heard", "taken"),
    ("check", "taken", "checked"),
    ("sign", "checked", "signed"),
    ("to_joined", "signed", "joined"),
]


def medians(breakdown: list[dict[str, float]]) -> dict[str, float]:
    """Each step's median over the rounds (made_ahead: the mean, a share)."""
    names = [name for name in breakdown[0] if all(name in b for b in breakdown)]
    out = {name: round(statistics.median(b[name] for b in breakdown), 1) for name in names}
    return out | {"made_ahead": statistics.mean(b["made_ahead"] for b in breakdown)}


def steps(times: dict[str, Any]) -> dict[str, float]:
    """The page's times as steps (ms): each from one event to the next."""
    at = {**times, **times["link"]}
    # An offer to a member named before the seat (docs/protocol.md 2.5.3) goes before
    # `joined`: describe is then 0 and answer counts from `joined`, so the steps still
    # add up to the join's time.
    at["described"] = max(at["described"], at["joined"])
    out = {name: at[end] - at[start] for name, start, end in STEPS}
    signing = {**times, **times["sign"]}
    if all(k in signing for _, a, b in SIGN_STEPS for k in (a, b)):
        out |= {f"seat.{name}": signing[end] - signing[start] for name, start, end in SIGN_STEPS}
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


async def start_node_from(tree: Path, workdir: Path, name: str, seed: Any) -> Any:
    """A `pagemesh node` process running the sources in `tree` (its folder first on
    sys.path), configured as signaling_load.start_node configures this tree's."""
    config = workdir / f"{name}.toml"
    config.write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NODE,
        *("node", "--config", str(config), "--data-dir", str(workdir / name)),
        *("--bootstrap", seed.dht),
        stdout=asyncio.subprocess.PIPE,
        cwd=tree,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    match = STARTED.search(line)
    if not match:
        raise RuntimeError(f"the reference node did not start: {line!r}")
    return Proc(proc, match.group(1), match.group(2))


async def web_pages() -> tuple[web.AppRunner, str]:
    """A site on 127.0.0.1 whose pages the extension's panel follows (any path answers)."""

    async def page(request: web.Request) -> web.Response:
        body = f"<!doctype html><title>{request.path}</title><p>A page to talk about."
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class Extension:
    """The built extension in a persistent Chromium profile, a web page open in a tab."""

    def __init__(self, context: Any, worker: Any, page_url: str) -> None:
        self.context = context
        self.worker = worker
        self.id = worker.url.split("/")[2]
        self.page_url = page_url

    @classmethod
    async def start(cls, playwright: Any, workdir: Path, node: str, page_url: str) -> Extension:
        folder, _ = build_extension(workdir / "extension", [node])
        context = await playwright.chromium.launch_persistent_context(
            str(workdir / "profile"),
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_FLAGS,
                f"--disable-extensions-except={folder}",
                f"--load-extension={folder}",
            ],
        )
        worker = context.service_workers[0] if context.service_workers else None
        if worker is None:
            worker = await context.wait_for_event("serviceworker", timeout=15_000)
        await context.add_init_script(WATCH)
        tab = context.pages[0] if context.pages else await context.new_page()
        await tab.goto(page_url)
        return cls(context, worker, page_url)

    async def open_panel(
        self, member: bytes, there: Members
    ) -> tuple[float, float, dict[str, float]]:
        """Open the panel, wait for its link to `member`; (open, join) to connected, in
        seconds, and its join's steps. The panel is closed, and `there` has seen it
        leave, before returning."""
        await self.worker.evaluate("chrome.storage.local.set({allowLocal: true, learned: []})")
        panel = await self.context.new_page()
        await panel.goto(f"chrome-extension://{self.id}/extension/panel.html", wait_until="commit")
        async with asyncio.timeout(30):
            await panel.evaluate("(key) => window.__connectedTo(key)", member.hex())
        times = await panel.evaluate(TIMES, member.hex())
        key = bytes.fromhex(await panel.evaluate("window.pagemesh.peer.keyHex"))
        await panel.close()
        await there.wait(lambda: key in there.left, 30)
        await asyncio.sleep(0.5)  # as after a page's context: Chromium tidies up a while
        opened, joined = times["connected"] / 1000, (times["connected"] - times["joining"]) / 1000
        return opened, joined, steps(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--file-mb", type=int, default=20)
    parser.add_argument("--joins", type=int, default=9)
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="TREE",
        help="another source tree whose node's page is measured beside this one's",
    )
    args = parser.parse_args()
    restrict_host_candidates(["127.0.0.1"])
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        first = await start_node(workdir, "n0")
        second = await start_node(workdir, "n1", seed=first)
        nodes = [first.url, second.url]
        reference = None
        if args.reference is not None:
            reference = await start_node_from(args.reference.resolve(), workdir, "ref", first)
        here = Peer(workdir / "here", [nodes[1]], accept_files_to=workdir / "inbox")
        await here.__aenter__()
        clock = Clock(await here.join(URL))
        pages, site = await web_pages()
        page_url = f"{site}/an-article-to-talk-about"
        there = Peer(workdir / "there", [nodes[1]])  # in the room of the extension's tab
        await there.__aenter__()
        present = Members(await there.join(canonical_url(page_url)))
        result: dict[str, Any] = {"benchmark": "browser_messaging", "chromium": CHROMIUM}
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_FLAGS
                )
                extension = await Extension.start(playwright, workdir, nodes[0], page_url)
                first_open, _, _ = await extension.open_panel(there.public_key, present)
                panel_opens: list[float] = []
                panel_joins: list[float] = []
                panel_breakdown: list[dict[str, float]] = []
                # open to connected: fresh browser profiles, then fresh Python peers
                opens: dict[str, list[float]] = {"browser": [], "python": []}
                joins: dict[str, list[float]] = {"browser": [], "python": []}
                page_joins: list[float] = []
                loaded: list[float] = []
                reference_loaded: list[float] = []
                reference_opens: list[float] = []
                reference_joins: list[float] = []
                reference_seats: list[float] = []
                breakdown: list[dict[str, float]] = []
                python_steps: dict[str, list[float]] = {"seat": [], "link": []}
                for i in range(args.joins):
                    context, _, times = await browser_page(
                        browser, nodes[0], f"b{i}", here.public_key
                    )
                    opens["browser"].append(times["connected"] / 1000)
                    joins["browser"].append((times["connected"] - times["joining"]) / 1000)
                    page_joins.append((times["connected"] - times["page_join"]) / 1000)
                    loaded.append(times["loaded"] / 1000)
                    breakdown.append(steps(times))
                    await context.close()
                    # Chromium goes on tearing the context down for a while; on a small
                    # machine that would slow the nodes while the Python peer joins
                    await asyncio.sleep(0.5)
                    if reference is not None:
                        context, _, times = await browser_page(
                            browser, reference.url, f"r{i}", here.public_key
                        )
                        reference_opens.append(times["connected"] / 1000)
                        reference_joins.append((times["connected"] - times["page_join"]) / 1000)
                        reference_seats.append((times["connected"] - times["joining"]) / 1000)
                        reference_loaded.append(times["loaded"] / 1000)
                        await context.close()
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
                    await asyncio.sleep(0.5)
                    opened, joined, panel_steps = await extension.open_panel(
                        there.public_key, present
                    )
                    panel_opens.append(opened)
                    panel_joins.append(joined)
                    panel_breakdown.append(panel_steps)
                for who in ("browser", "python"):
                    result[f"open_to_connected_{who}"] = summary(opens[who])
                    result[f"join_to_connected_{who}"] = summary(joins[who])
                for what in ("open", "join"):
                    got = result[f"{what}_to_connected_browser"]["p50_ms"]
                    base = result[f"{what}_to_connected_python"]["p50_ms"]
                    result[f"ratio_{what}_browser_vs_python"] = round(got / base, 3)
                result["page_join_to_connected_browser"] = summary(page_joins)
                result["page_loaded_browser"] = summary(loaded)
                if reference is not None:
                    result["reference"] = str(args.reference)
                    result["open_to_connected_reference"] = summary(reference_opens)
                    result["page_join_to_connected_reference"] = summary(reference_joins)
                    result["page_loaded_reference"] = summary(reference_loaded)
                    result["join_to_connected_reference"] = summary(reference_seats)
                    result["ratio_join_reference_vs_python"] = round(
                        result["join_to_connected_reference"]["p50_ms"]
                        / result["join_to_connected_python"]["p50_ms"],
                        3,
                    )
                    result["ratio_open_browser_vs_reference"] = round(
                        result["open_to_connected_browser"]["p50_ms"]
                        / result["open_to_connected_reference"]["p50_ms"],
                        3,
                    )
                result["join_breakdown_browser"] = medians(breakdown)
                result["join_breakdown_panel"] = medians(panel_breakdown)
                result["join_breakdown_python"] = {
                    name: round(statistics.median(values), 1)
                    for name, values in python_steps.items()
                }
                result["panel_open_to_connected_extension"] = summary(panel_opens)
                result["panel_join_to_connected_extension"] = summary(panel_joins)
                python_open = result["open_to_connected_python"]["p50_ms"]
                python_join = result["join_to_connected_python"]["p50_ms"]
                result["ratio_panel_open_vs_python"] = round(
                    result["panel_open_to_connected_extension"]["p50_ms"] / python_open, 3
                )
                result["ratio_panel_join_vs_python"] = round(
                    result["panel_join_to_connected_extension"]["p50_ms"] / python_join, 3
                )
                result["panel_first_open_ms"] = ms(first_open)
                await extension.context.close()

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
            present.task.cancel()
            await there.close()
            await pages.cleanup()
            await here.close()
            if reference is not None:
                await stop(reference)
            await stop(second)
            await stop(first)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
