"""`pagemesh demo` as a person meets it: open the printed address in a browser,
be greeted, hand the file bot a file and get it back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .conftest import ARTIFACTS, download_sha256


async def test_the_demo_in_a_browser(chromium: Any, tmp_path: Path) -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "demo",
        "--duration",
        "90",
        "--data-dir",
        str(tmp_path / "demo"),
        "--port",
        "0",  # free ports: another demo on this machine may hold the fixed ones
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert demo.stdout is not None
        address = site = extension = ""
        async with asyncio.timeout(60):
            while not extension:
                line = (await demo.stdout.readline()).decode()
                assert line, "the demo ended before printing every way in"
                if "/#room=" in line:
                    address = line.strip()
                elif line.startswith("  http://") and address:
                    site = line.strip()  # the sample site that embeds the widget
                elif "extension, built for these nodes in" in line:
                    extension = line.split(" in ", 1)[1].split(" (", 1)[0]
        assert address.startswith("http://127.0.0.1:")
        assert site.startswith("http://127.0.0.1:") and site.split(":")[2] != address.split(":")[2]
        assert (Path(extension) / "manifest.json").is_file()
        assert Path(extension).with_suffix(".zip").is_file()

        context = await chromium.new_context(viewport={"width": 1100, "height": 700})
        page = await context.new_page()
        await page.goto(address)
        await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        await page.fill("#name", "visitor")
        await page.dispatch_event("#name", "change")
        greeting = "#messages li.msg .body:has-text('welcome to the room')"
        await page.wait_for_selector(greeting, timeout=30_000)
        # Both bots connected directly. (No wait_for_function here: it evaluates
        # strings, and this page runs under the node's Content-Security-Policy.)
        await page.locator("#members .path[data-path=direct]").nth(1).wait_for(timeout=20_000)

        original = tmp_path / "notes.txt"
        original.write_bytes(os.urandom(300_000))
        await page.set_input_files("#file", str(original))
        # Not an image to show inline: the page asks before it downloads the echo.
        await page.click('#messages li.file:has-text("echo-notes.txt") button.accept')
        echoed = await page.wait_for_selector(
            'a.download[data-name="echo-notes.txt"]', timeout=30_000
        )
        digest = await download_sha256(page, echoed)
        assert digest == hashlib.sha256(original.read_bytes()).hexdigest()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

        # The sample site on another origin: its one <script> line gives the chat.
        await page.goto(site)
        await page.get_by_role("button", name="Chat with people on this page").click()
        iframe = await page.wait_for_selector("[data-pagemesh] iframe", state="attached")
        widget = await iframe.content_frame()
        await widget.wait_for_selector("#leave:not([hidden])", timeout=20_000)
        await widget.wait_for_selector(greeting, timeout=30_000)  # the greeter reads it too
        await page.screenshot(path=str(ARTIFACTS / "demo-site.png"))
        await context.close()

        # On a phone the site is as wide as the screen (its <pre> line wraps), so the
        # launcher in its corner is on the screen and a tap opens the chat.
        phone = await chromium.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        page = await phone.new_page()
        await page.goto(site)
        launcher = page.get_by_role("button", name="Chat with people on this page")
        box = await launcher.bounding_box()
        assert box is not None
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, box
        await launcher.tap()
        iframe = await page.wait_for_selector("[data-pagemesh] iframe", state="visible")
        widget = await iframe.content_frame()
        await widget.wait_for_selector("#leave:not([hidden])", timeout=20_000)
        await page.screenshot(path=str(ARTIFACTS / "demo-site-phone.png"))
        await phone.close()
    finally:
        demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await demo.wait() == 0
