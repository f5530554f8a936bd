"""A page whose timers never fire stays connected: the node's WebSocket pings keep it.

Chromium wakes the chained timers (every setInterval) of a page hidden for 5
minutes at most once a minute ("intensive wake up throttling", chromestatus.com
feature 4718288976216064), so a hidden page's application pings can come too
late for the node's idle timeout. Here the page's setInterval is taken away
before its modules load, so it sends no application ping at all; Chromium
answers the node's WebSocket PINGs in its network stack, and the page stays
(docs/protocol.md 3.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from signaling.session import SessionLimits
from tests.signaling.conftest import NodeFactory

IDLE = 1.5  # the node's idle timeout here (60 s by default)

NO_INTERVALS = """
window.setInterval = (callback, delay) => {
  (window.intervalsRefused = window.intervalsRefused || []).push(delay);
  return 0;
};
"""


def pings(sent: list[tuple[float, str]]) -> list[str]:
    found = []
    for _, payload in sent:
        try:
            frame = json.loads(payload)
        except ValueError:
            continue
        if isinstance(frame, dict) and frame.get("type") == "ping":
            found.append(payload)
    return found


async def test_a_page_that_never_pings_stays_connected(
    signaling_mesh: NodeFactory, chromium: Any
) -> None:
    (node,) = await signaling_mesh(
        1, limits=dataclasses.replace(SessionLimits(), idle_timeout=IDLE)
    )
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, str]] = []  # every data frame the page sends, with when

    def watch(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append((loop.time(), str(payload))))

    context = await chromium.new_context(bypass_csp=True)
    try:
        page = await context.new_page()
        page.on("websocket", watch)
        await page.add_init_script(NO_INTERVALS)
        await page.goto(node.url.replace("ws://", "http://") + "/?name=hidden")
        await page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
        assert await page.evaluate("window.intervalsRefused") == [IDLE / 3 * 1000]
        log_before = await page.evaluate("window.pagemesh.statusLog.length")

        end = loop.time() + 4 * IDLE
        while loop.time() < end:
            assert await page.get_attribute("#status", "data-state") == "connected"
            await asyncio.sleep(0.25)

        assert await page.evaluate("window.pagemesh.statusLog.length") == log_before
        assert pings(sent) == []
        last_sent = max(when for when, _ in sent)
        assert end - last_sent > 2 * IDLE  # it said nothing for two idle timeouts, and stayed
        assert len(node.clients) == 1
        assert node.metrics.errors.labels("idle")._value.get() == 0
    finally:
        await context.close()
