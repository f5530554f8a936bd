"""The browser and Python read and write the same identity files: a key exported
in Chromium imports in Python and the reverse, with the same public key; the
same defects get the same error codes in both; the bytes match a known answer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from peer.identity_file import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    IdentityFileError,
    export_identity,
    import_identity,
)
from signaling.node import WEB_DIR
from tests.peer.test_identity_file import (
    FAST,
    GOOD,
    PASSPHRASE,
    SEED,
    VECTOR,
    edited,
    sealed,
)

BLANK = "<!doctype html><title>identity files</title>"

IMPORT = """async () => { window.m = await import('/web/js/identityfile.js'); }"""

# (seed as a list of ints, passphrase, name, iterations) -> file text
EXPORT = """async ([seed, passphrase, name, iterations]) => window.m.exportIdentity(
    Uint8Array.from(seed), passphrase, name, { iterations })"""

# (text, passphrase, minIterations) -> [seed as ints, name, publicKey] or the error's code
IMPORT_FILE = """async ([text, passphrase, minIterations]) => {
    try {
        const got = await window.m.importIdentity(text, passphrase, { minIterations });
        return { seed: Array.from(got.seed), name: got.name, pub: got.publicKey };
    } catch (e) {
        return { code: e.code ?? String(e), message: e.message };
    }
}"""


@pytest.fixture
async def page(chromium: Any) -> AsyncIterator[Any]:
    """A blank page from a loopback server (a secure context) serving the client's modules."""

    async def blank(_request: web.Request) -> web.Response:
        return web.Response(text=BLANK, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    app.router.add_static("/web", WEB_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.evaluate(IMPORT)
        yield page
    finally:
        await context.close()
        await runner.cleanup()


async def browser_export(
    page: Any, seed: bytes, name: str | None, iterations: int = FAST, passphrase: str = PASSPHRASE
) -> bytes:
    text: str = await page.evaluate(EXPORT, [list(seed), passphrase, name, iterations])
    return text.encode()


async def browser_import(
    page: Any, data: bytes | str, passphrase: str = PASSPHRASE, min_iterations: int = FAST
) -> dict[str, Any]:
    text = data.decode() if isinstance(data, bytes) else data
    got: dict[str, Any] = await page.evaluate(IMPORT_FILE, [text, passphrase, min_iterations])
    return got


async def test_exported_in_the_browser_imported_in_python(page: Any) -> None:
    seed = os.urandom(32)
    data = await browser_export(page, seed, "Zoë 🌍")
    assert import_identity(data, PASSPHRASE, min_iterations=FAST) == (seed, "Zoë 🌍")
    assert json.loads(data)["pub"] == bytes(SigningKey(seed).verify_key).hex()
    with pytest.raises(IdentityFileError, match="wrong passphrase"):
        import_identity(data, PASSPHRASE + "!", min_iterations=FAST)


async def test_exported_in_python_imported_in_the_browser(page: Any) -> None:
    seed = os.urandom(32)
    for name in ["Ana", None]:
        data = export_identity(seed, PASSPHRASE, name, iterations=FAST)
        got = await browser_import(page, data)
        assert got == {
            "seed": list(seed),
            "name": name,
            "pub": bytes(SigningKey(seed).verify_key).hex(),
        }
    wrong = await browser_import(page, data, "Correct horse battery staple")
    assert wrong == {
        "code": "wrong-passphrase",
        "message": "wrong passphrase (or the file was altered)",
    }


async def test_the_imported_key_signs_as_python_does(page: Any) -> None:
    # keyPairFromSeed gives the page a non-extractable key that is the same identity.
    seed = os.urandom(32)
    message = b"pagemesh"
    pub, sig, extractable = await page.evaluate(
        """async ([seed, message]) => {
            const pair = await window.m.keyPairFromSeed(Uint8Array.from(seed));
            const pub = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
            const sig = new Uint8Array(
                await crypto.subtle.sign('Ed25519', pair.privateKey, Uint8Array.from(message)));
            return [Array.from(pub), Array.from(sig), pair.privateKey.extractable];
        }""",
        [list(seed), list(message)],
    )
    assert bytes(pub) == bytes(SigningKey(seed).verify_key)
    VerifyKey(bytes(pub)).verify(message, bytes(sig))
    assert extractable is False


async def test_the_browser_writes_the_known_answer(page: Any) -> None:
    text = await page.evaluate(
        """async ([seed, passphrase]) => {
            let next = 0;
            const randomBytes = (n) => Uint8Array.from({ length: n }, () => next++ % 256);
            return window.m.exportIdentity(
                Uint8Array.from(seed), passphrase, 'Ana', { iterations: 1000, randomBytes });
        }""",
        [list(SEED), PASSPHRASE],
    )
    assert text.encode() == VECTOR


DEFECTS: list[bytes] = [
    b"\xef\xbb\xbf" + GOOD,  # a leading BOM: accepted by both
    b"{",
    b'{"iter": NaN}',
    b"[1]",
    b"{}",
    b'{"pagemesh-identity": 2}',
    b'{"pagemesh-identity": true}',
    b'{"pagemesh-identity": 1.0}',
    b'{"pagemesh-identity": 1}',
    b" " * 4097,
    edited(GOOD, pub=...),
    edited(GOOD, toString="x"),
    edited(GOOD, __proto__={}),
    edited(GOOD, kdf="scrypt"),
    edited(GOOD, iter="1000"),
    edited(GOOD, iter=1000.5),
    edited(GOOD, iter=True),
    edited(GOOD, iter=10**30),
    edited(GOOD, iter=-(10**30)),
    edited(GOOD, iter=10_000_001),
    edited(GOOD, iter=999),
    edited(GOOD, iter=1001),
    edited(GOOD).replace(b'"iter": 1000', b'"iter": 1e400'),
    edited(GOOD).replace(b'"iter": 1000', b'"iter": 1000.0'),
    edited(GOOD).replace(b'"iter": 1000', b'"iter": ' + b"9" * 400),
    edited(GOOD, salt="AAAA"),
    edited(GOOD, salt="AAECAwQFBgcICQoLDA0ODw"),
    edited(GOOD, salt="AAECAwQFBgcICQoLDA0ODx=="),
    edited(GOOD, salt=" AAECAwQFBgcICQoLDA0ODw=="),
    edited(GOOD, salt="AAECAwQFBgcICQoLDA0ODw==\n"),
    edited(GOOD, salt="AAECAwQFBgcICQoL-A0ODw=="),
    edited(GOOD, nonce=12),
    edited(GOOD, ct="AAAA"),
    edited(GOOD, pub="AB" * 32),
    edited(GOOD, pub=bytes(SigningKey(bytes(32)).verify_key).hex()),
    sealed(SEED, bytes(SigningKey(bytes(32)).verify_key)),
    sealed(SEED + b"\xc3", bytes(SigningKey(SEED).verify_key)),
    sealed(SEED + b"\xed\xa0\x80", bytes(SigningKey(SEED).verify_key)),  # a UTF-8 surrogate
    sealed(SEED + b"\xef\xbb\xbfAna", bytes(SigningKey(SEED).verify_key)),
]


def python_outcome(data: bytes, min_iterations: int = FAST) -> str:
    try:
        seed, name = import_identity(data, PASSPHRASE, min_iterations=min_iterations)
    except IdentityFileError as exc:
        return exc.code
    return f"ok {seed.hex()} {name!r}"


async def test_both_readers_agree_on_every_defect(page: Any) -> None:
    for data in DEFECTS:
        got = await browser_import(page, data)
        browser = got["code"] if "code" in got else f"ok {bytes(got['seed']).hex()} {got['name']!r}"
        assert browser == python_outcome(data), data


FUZZ = """async ([files, passphrase]) => Promise.all(files.map(async (bytes) => {
    try {
        const got = await window.m.importIdentity(Uint8Array.from(bytes), passphrase,
                                                  { minIterations: 1 });
        return `ok ${Array.from(got.seed, (b) => b.toString(16).padStart(2, '0')).join('')} ` +
            (got.name === null ? 'None' : `'${got.name}'`);
    } catch (e) {
        return e instanceof window.m.IdentityFileError ? e.code : `${e.name}: ${e.message}`;
    }
}))"""


@st.composite
def mutated_good(draw: st.DrawFn) -> bytes:
    """A good file with a few bytes replaced, then cut somewhere."""
    raw = bytearray(GOOD)
    for _ in range(draw(st.integers(0, 3))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw[: draw(st.integers(len(raw) // 2, len(raw)))])


FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 64)
    | st.integers(MAX_ITERATIONS + 1, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False, max_value=64)
    | st.text(max_size=30)
    | st.sampled_from(["AAAA", "AAECAwQFBgcICQoLDA0ODw==", "ab" * 32, "AB" * 32])
)
FILES = st.builds(
    lambda fields: json.dumps({**json.loads(GOOD), **fields}).encode(),
    st.dictionaries(st.sampled_from([*json.loads(GOOD), "x", "__proto__"]), FIELD_VALUES),
) | st.binary(max_size=64)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(FILES | mutated_good(), min_size=1, max_size=40))
async def test_both_readers_agree_on_fuzzed_files(page: Any, files: list[bytes]) -> None:
    outcomes = await page.evaluate(FUZZ, [[list(f) for f in files], PASSPHRASE])
    for data, browser in zip(files, outcomes, strict=True):
        python = python_outcome(data, min_iterations=1)
        assert browser == python, (data, browser, python)


async def test_default_iterations_across_languages(page: Any) -> None:
    # Once at the real count: export in Chromium, import in Python and in Chromium.
    seed = os.urandom(32)
    text, export_ms = await page.evaluate(
        """async ([seed, passphrase]) => {
            const start = performance.now();
            const text = await window.m.exportIdentity(Uint8Array.from(seed), passphrase, 'Ana');
            return [text, performance.now() - start];
        }""",
        [list(seed), PASSPHRASE],
    )
    assert json.loads(text)["iter"] == DEFAULT_ITERATIONS
    began = time.perf_counter()
    assert import_identity(text.encode(), PASSPHRASE) == (seed, "Ana")
    python_ms = (time.perf_counter() - began) * 1000
    seed_back, import_ms = await page.evaluate(
        """async ([text, passphrase]) => {
            const start = performance.now();
            const got = await window.m.importIdentity(text, passphrase);
            return [Array.from(got.seed), performance.now() - start];
        }""",
        [text, PASSPHRASE],
    )
    assert bytes(seed_back) == seed
    print(
        f"at {DEFAULT_ITERATIONS} iterations: Chromium export {export_ms:.0f} ms, "
        f"import {import_ms:.0f} ms; Python import {python_ms:.0f} ms"
    )


# --- version 2: contacts (docs/identity.md, "Version 2") ------------------------------

CONTACT_TO_JS = """(c) => ({ key: Uint8Array.from(c.key), petname: c.petname,
    x: c.x && Uint8Array.from(c.x), sig: c.sig && Uint8Array.from(c.sig),
    room: c.room && Uint8Array.from(c.room), page: c.page })"""


def contact_json(c: Any) -> dict[str, Any]:
    return {
        "key": list(c.key),
        "petname": c.petname,
        "x": c.x and list(c.x),
        "sig": c.sig and list(c.sig),
        "room": c.room and list(c.room),
        "page": c.page,
    }


async def test_the_browser_writes_the_known_answer_with_contacts(page: Any) -> None:
    from tests.peer.test_identity_contacts import ANA, BEN, KNOWN_2

    text = await page.evaluate(
        """async ([seed, passphrase, contacts]) => {
            let next = 0;
            const randomBytes = (n) => Uint8Array.from({ length: n }, () => next++ % 256);
            const toJs = TO_JS;
            return window.m.exportIdentity(Uint8Array.from(seed), passphrase, 'Ana',
                { iterations: 1000, randomBytes, contacts: contacts.map(toJs) });
        }""".replace("TO_JS", CONTACT_TO_JS),
        [list(SEED), PASSPHRASE, [contact_json(BEN), contact_json(ANA)]],
    )
    assert text.encode() == KNOWN_2
    got = await page.evaluate(
        """async ([text, passphrase]) => {
            const got = await window.m.importIdentity(text, passphrase, { minIterations: 1000 });
            const h = (b) => b && Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
            return { name: got.name, contacts: got.contacts.map((c) => [h(c.key), c.petname,
                h(c.x), h(c.sig), h(c.room), c.page]) };
        }""",
        [KNOWN_2.decode(), PASSPHRASE],
    )
    h = lambda b: b and b.hex()  # noqa: E731
    assert got == {
        "name": "Ana",
        "contacts": [
            [h(c.key), c.petname, h(c.x), h(c.sig), h(c.room), c.page] for c in (BEN, ANA)
        ],
    }
