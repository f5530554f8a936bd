"""The count the extension shows on its toolbar button (web/extension/badge.js): never
more than the four characters its service worker accepts, or the badge would freeze
at its last value (a page of a million people once read "1000k")."""

from __future__ import annotations

from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

COUNTS = [0, 7, 9999, 10_000, 999_999, 1_000_000, 12_345_678, 999_999_999, 10**9, 2**53 - 1]


async def test_every_count_fits_the_button(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "badge")
    got = await page.evaluate(
        """async (counts) => {
            const { badgeText, MAX_BADGE } = await import('/web/extension/badge.js');
            return { max: MAX_BADGE, texts: counts.map(badgeText),
                     odd: [-1, 1.5, NaN, null, '12'].map(badgeText) };
        }""",
        COUNTS,
    )
    assert got["texts"] == ["0", "7", "9999", "10k", "999k", "1M", "12M", "999M", "1G+", "1G+"]
    assert all(len(t) <= got["max"] for t in got["texts"])
    assert got["odd"] == ["", "", "", "", ""]
