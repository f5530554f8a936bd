"""Images a member shares are shown unasked only if their header says a size the page can
decode (docs/protocol.md 5.2): a 250 KB PNG that says 16000 x 16000 took Chromium 3.7 s
and a gigabyte to draw. `js/imagesize.js` reads the size as each format writes it; here
Pillow writes real images of every format the page shows, hypothesis feeds the reader
junk, and a Python member shares a bomb with the page."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from peer.peer import Connected, FileDone, Peer
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, next_of
from .test_vectors import page  # noqa: F401  (fixture)

URL = "https://example.org/pictures"

SIZES = """async (images) => {
    const m = await import('/web/js/imagesize.js');
    const bytes = (h) => new Uint8Array(h.match(/../g)?.map((x) => parseInt(x, 16)) ?? []);
    return images.map((h) => {
        const size = m.imageSize(bytes(h));
        return size && [size.width, size.height];
    });
}"""


def encoded(kind: str, width: int, height: int, **options: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, kind, **options)
    return out.getvalue()


async def test_the_size_of_every_format_the_page_shows(page: Any) -> None:  # noqa: F811
    cases = []
    for width, height in [(1, 1), (640, 480), (17, 3001), (4000, 3000)]:
        cases += [
            encoded("PNG", width, height),
            encoded("GIF", width, height),
            encoded("JPEG", width, height),
            encoded("JPEG", width, height, progressive=True, exif=b"Exif\x00\x00" + b"\x00" * 9000),
            encoded("WEBP", width, height, lossless=True),
            encoded("WEBP", width, height, quality=50),
            encoded("AVIF", width, height) if width * height < 10**6 else encoded("PNG", 2, 2),
        ]
    expected = [list(Image.open(io.BytesIO(image)).size) for image in cases]
    assert await page.evaluate(SIZES, [image.hex() for image in cases]) == expected
    # an animated WebP (VP8X) and text that is no image
    frames = [Image.new("RGB", (33, 44), c) for c in [(0, 0, 0), (255, 255, 255)]]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    got = await page.evaluate(SIZES, [out.getvalue().hex(), b"<html>".hex(), ""])
    assert got == [[33, 44], None, None]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    images=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(
                [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBP"]
            ).flatmap(lambda head: st.binary(max_size=48).map(lambda rest: head + rest)),
        ),
        max_size=20,
    )
)
async def test_the_size_reader_takes_any_bytes(page: Any, images: list[bytes]) -> None:  # noqa: F811
    sizes = await page.evaluate(SIZES, [image.hex() for image in images])
    for size in sizes:
        assert size is None or (isinstance(size, list) and all(v > 0 for v in size))


def png_header_says(width: int, height: int) -> bytes:
    """A small PNG whose header says `width` x `height`: what a browser would decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compressobj()
    data = b"".join(rows.compress(b"\x00" + b"\x00" * 3 * width) for _ in range(64))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data + rows.flush())
    ) + chunk(b"IEND", b"")


async def test_a_member_s_image_bomb_is_a_download_not_a_picture(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    async with Peer(tmp_path / "eve", [node.url], name="Eve") as eve:
        room = await eve.join(URL)
        page = await open_page(node, "Ben", room=URL)
        ben = bytes.fromhex(await page.evaluate("window.pagemesh.peer.identityHex"))
        await next_of(room, Connected, key=ben)
        bomb, fine = tmp_path / "bomb.png", tmp_path / "fine.png"
        bomb.write_bytes(png_header_says(16000, 16000))
        fine.write_bytes(encoded("PNG", 300, 200))
        assert bomb.stat().st_size < 1 << 20  # small enough to be taken unasked
        await room.send_file(bomb)
        await room.send_file(fine)
        for _ in range(2):
            await next_of(room, FileDone, within=20)
        rows = page.locator("#messages li.file")
        await page.wait_for_function(
            "document.querySelectorAll('#messages li.file a.download').length == 2"
        )
        bomb_row = rows.filter(has_text="bomb.png")
        fine_row = rows.filter(has_text="fine.png")
        assert await bomb_row.locator("img").count() == 0
        assert await bomb_row.locator("a.download").count() == 1
        await fine_row.locator("img").wait_for()
        size = await fine_row.locator("img").evaluate(
            "(img) => [img.naturalWidth, img.naturalHeight]"
        )
        assert size == [300, 200]
