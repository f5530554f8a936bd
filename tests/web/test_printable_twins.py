"""How a member's name or text is shown is the same on the page and in a terminal:
people.js `printable` and `namesake` (Chromium runs them) and peer/chatscreen.py
`printable` and `looks` give the same string for the same input (docs/protocol.md
5.0.1, "Names that hold"). Controls, format marks, lone surrogates and line and
paragraph separators become U+FFFD; a zero-width joiner stays only between two
pictographs (an emoji sequence such as 👩‍💻, 👩🏽‍💻 or ❤️‍🔥).

Strings cross to the page as JSON text with \\u escapes, so that a lone surrogate
crosses as it is; a high surrogate before a low one would be one astral character
on the page and two in Python, and is not drawn. Characters unassigned in Python's
Unicode (unicodedata) are left out of the random strings, and of the character-by-
character comparison of what is hidden: a newer Unicode in the browser may have
given them a category (Egyptian hieroglyph format controls, Cf since 15.0)."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peer.chatscreen import PICTOGRAPHS, looks, printable

from .test_vectors import page  # noqa: F401  (fixture)

SHOW = """async (texts) => {
    const { printable, namesake } = await import('/web/js/people.js');
    return JSON.stringify(JSON.parse(texts).map((t) => [printable(t), namesake(printable(t))]));
}"""

PAIRED = re.compile("[\ud800-\udbff][\udc00-\udfff]")
"""A surrogate pair: one character to the page, two to Python."""

PICTOGRAPH = st.sampled_from(PICTOGRAPHS).flatmap(lambda r: st.integers(*r)).map(chr)
"""Any Extended_Pictographic character, assigned or held for later emoji."""
PARTS = st.sampled_from(
    [
        "\u200d",  # zero-width joiner
        "\ufe0f",  # emoji presentation
        "\U0001f3fb",  # skin tone modifiers (not pictographs themselves)
        "\U0001f3fd",
        "\U0001f3ff",
        "\u200b",  # zero-width space
        "\u200c",  # zero-width non-joiner
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\ufeff",  # byte order mark
        "\u00ad",  # soft hyphen
        "\u2028",  # line separator
        "\u2029",  # paragraph separator
        "\x1b",
        "\x00",
        "\x85",
        "\n",
        "\t",
        " ",
        "\u00a0",
        "\u1680",
        "\u2003",
        "\u3000",
        "\ud800",  # lone surrogates
        "\udfff",
        "\U000e0041",  # tag letter
        "A",
        "\u00e9",
    ]
)
KNOWN = st.characters(codec=None).filter(lambda c: unicodedata.category(c) != "Cn")
"""Any character Python's Unicode assigns (surrogates aside: PARTS has those)."""
TEXTS = (
    st.lists(PICTOGRAPH | PARTS | KNOWN, max_size=12)
    .map("".join)
    .filter(lambda t: not PAIRED.search(t))
)


async def shown(page: Any, texts: list[str]) -> list[list[str]]:  # noqa: F811
    got: list[list[str]] = json.loads(await page.evaluate(SHOW, json.dumps(texts)))
    return got


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(TEXTS, min_size=1, max_size=60))
@example(
    [
        "\U0001f469\u200d\U0001f4bb",  # 👩‍💻
        "\U0001f469\U0001f3fd\u200d\U0001f4bb",  # 👩🏽‍💻
        "\u2764\ufe0f\u200d\U0001f525",  # ❤️‍🔥
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # 👨‍👩‍👧
        "\U0001f3f3\ufe0f\u200d\U0001f308",  # 🏳️‍🌈
        "Ana\u200d\U0001f4bb",
        "\U0001f469\u200dAna",
        "\u200d\U0001f4bb",
        "\U0001f469\u200d",
        "\U0001f469\u200d\u200d\U0001f4bb",
        "\U0001f469\ufe0f\ufe0f\u200d\U0001f4bb",
        "\U0001f3fb\u200d\U0001f4bb",
        " Ana  \u00a0 Lee\u3000",
        "cat\u202egnp.exe",
        "\ud83d",
    ]
)
async def test_the_page_and_the_terminal_show_the_same(
    page: Any,  # noqa: F811
    texts: list[str],
) -> None:
    assert await shown(page, texts) == [[printable(t), looks(t)] for t in texts]


EVERY = """async () => {
    const { printable } = await import('/web/js/people.js');
    const hidden = [], joins = [];
    for (let c = 0; c < 0x110000; c++) {
        const s = String.fromCodePoint(c);
        if (printable(s) !== s) hidden.push(c);
        if (printable('\\u{1F469}\\u200D' + s).includes('\\u200D')) joins.push(c);
    }
    return [hidden, joins];
}"""


async def test_every_character_is_hidden_and_joined_alike(page: Any) -> None:  # noqa: F811
    """Character by character: what is hidden alone, and what a joiner after a
    pictograph may join."""
    hidden, joins = await page.evaluate(EVERY)
    every = [chr(c) for c in range(0x110000)]
    known = {c for c in range(0x110000) if unicodedata.category(chr(c)) != "Cn"}
    assert {c for c in hidden if c in known} == {
        ord(s) for s in every if ord(s) in known and printable(s) != s
    }
    assert set(joins) == {ord(s) for s in every if "\u200d" in printable("\U0001f469\u200d" + s)}
