"""The browser's parsers and messaging core take any input: a typed ProtocolError
or a counted drop, never another exception (hypothesis generates, Chromium runs)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_vectors import page  # noqa: F401  (fixture)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=20,
)
KEYS = ["env", "envs", "seq", "since", "room", "author", "lamport", "ts", "kind", "body"]
FRAME = st.fixed_dictionaries(
    {"t": st.sampled_from(["msg", "hist", "ack", "hist-req", "file-offer", "x"])},
    optional={k: JSON for k in KEYS},
)

RUN = """async (inputs) => {
    const m = window.m;
    const room = new m.ReliableRoom('00'.repeat(20), '11'.repeat(32));
    room.connected('22'.repeat(32), 0);
    const outcomes = [];
    for (const [kind, value] of inputs) {
        try {
            if (kind === 'envelope') m.parseEnvelope(value);
            else if (kind === 'offer') m.parseOffer(value, 1 << 20);
            else if (kind === 'sdp') m.parseDescription(value);
            else if (kind === 'frame') room.receive('22'.repeat(32), value, 1);
            else if (kind === 'chunk') {
                const d = new m.Download({id: '0'.repeat(32), name: 'x', size: 100,
                                          mime: 'a/b', sha256: '00'.repeat(32), chunk: 1024});
                await d.receiveChunk(m.fromHex(value));
            }
            outcomes.push('ok');
        } catch (e) {
            outcomes.push(e instanceof m.ProtocolError ? 'typed' : `${e.name}: ${e.message}`);
        }
    }
    room.handleTimer(100);
    room.framesToSend();
    return outcomes;
}"""


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["envelope", "offer", "sdp"]), JSON),
            st.tuples(st.just("frame"), FRAME | JSON),
            st.tuples(st.just("chunk"), st.binary(max_size=120).map(bytes.hex)),
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_js_parsers_and_core_never_throw_untyped(page: Any, batch: list[Any]) -> None:  # noqa: F811
    outcomes = await page.evaluate(RUN, batch)
    assert all(o in ("ok", "typed") for o in outcomes), [
        (i, o) for i, o in zip(batch, outcomes, strict=True) if o not in ("ok", "typed")
    ]
