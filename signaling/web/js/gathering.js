// When a description may go before ICE gathering completes (docs/protocol.md
// 5.0, "Gathering"). Sans-IO: every call takes `now` in seconds, so tests
// drive it on virtual time; peer.js feeds it the candidates its
// RTCPeerConnection gathers and re-arms one timer at `timer()`.
//
// Descriptions carry their candidates (no trickle), so the page used to wait
// for `iceGatheringState` "complete". Chromium reaches it only after its
// allocation phases (UDP, relay, TCP; 50 ms apart) end and every STUN and TURN
// transaction is answered or given up: about 125 ms with no servers at all,
// many seconds when a server is unreachable. Most of that wait adds nothing:
//
// * all host candidates come at once, from the first phase;
// * a server reflexive candidate exists only when a STUN server is configured;
// * a relay candidate exists only when a TURN server is configured, and it
//   alone reaches any peer that can reach the relay, so once it is there no
//   candidate still missing is worth waiting for;
// * a candidate left out is rarely lost: our connectivity checks reach the
//   other side from it, which learns it as peer reflexive (RFC 8445 7.3.1.3).
//
// So a description goes once it holds every type its configuration can yield
// (only `relay` when relay-only), or a relay candidate, each followed by
// `settle` for its siblings (other interfaces, the other address family);
// else at "complete", else `bound` after it began (the old 5 s gatherTimeout):
// a server that never answers delays a description as much as before, never
// more.

export const GATHER_SETTLE = 0.01; // s: a burst of candidates arrives within a few ms
export const GATHER_BOUND = 5.0; // s: the longest wait, as before

export function expectedTypes(iceServers, relayOnly = false) {
  // The candidate types a configuration can give: host always (unless relay-only),
  // srflx with a STUN server, relay with a TURN server.
  if (relayOnly) return new Set(["relay"]);
  const types = new Set(["host"]);
  for (const server of Array.isArray(iceServers) ? iceServers : []) {
    for (const url of [server?.urls].flat()) {
      const scheme = String(url ?? "").split(":")[0].toLowerCase();
      if (scheme === "stun" || scheme === "stuns") types.add("srflx");
      else if (scheme === "turn" || scheme === "turns") types.add("relay");
    }
  }
  return types;
}

export class GatherWait {
  constructor(expected, { settle = GATHER_SETTLE, bound = GATHER_BOUND } = {}) {
    this.expected = new Set(expected);
    this.settle = settle;
    this.bound = bound;
    this.seen = new Set(); // types gathered so far (at most host, srflx, prflx, relay)
    this.startedAt = null; // when the wait began (the description was set locally)
    this.enoughAt = null; // when the last type needed arrived
    this.completedAt = null; // when gathering completed
  }

  start(now) {
    // The description is set locally: from now on at most `bound`.
    this.startedAt ??= now;
  }

  candidate(type, now) {
    // A candidate of `type` was gathered (before or after start).
    if (!["host", "srflx", "prflx", "relay"].includes(type)) return;
    this.seen.add(type);
    if (this.enoughAt === null && this.enough()) this.enoughAt = now;
  }

  complete(now) {
    // Gathering is over: nothing more will come.
    this.completedAt ??= now;
  }

  enough() {
    return this.seen.has("relay") || [...this.expected].every((type) => this.seen.has(type));
  }

  ready(now) {
    if (this.completedAt !== null) return true;
    if (this.enoughAt !== null && now >= this.enoughAt + this.settle) return true;
    return this.startedAt !== null && now >= this.startedAt + this.bound;
  }

  timer() {
    // When ready() may next turn true, or null before start (or when it is).
    if (this.completedAt !== null || this.startedAt === null) return null;
    const bound = this.startedAt + this.bound;
    return this.enoughAt === null ? bound : Math.min(bound, this.enoughAt + this.settle);
  }
}

// What a page remembers of its node's servers, to begin its first connection with them
// before the next welcome names them (peer.js, Peer.open; docs/protocol.md 5.0,
// "Connections made ahead"). Never a credential: STUN URLs (they need none), or only
// that TURN servers came (their credentials are minted for each client and expire).
// Read back from the browser's storage, so parsed as untrusted: anything else is null.
export const MAX_REMEMBERED_URLS = 4;
const MAX_URL_LENGTH = 256;

function stunUrl(url) {
  return typeof url === "string" && url.length <= MAX_URL_LENGTH && /^stuns?:[a-z0-9.:[\]_%?=&-]+$/i.test(url);
}

export function serversHint(iceServers) {
  // The hint to keep for these servers (as a welcome gave them): a JSON string.
  const urls = (Array.isArray(iceServers) ? iceServers : []).flatMap((server) => [server?.urls].flat().map(String));
  if (urls.some((url) => !stunUrl(url))) return JSON.stringify({ v: 1, relay: true });
  return JSON.stringify({ v: 1, stun: urls.slice(0, MAX_REMEMBERED_URLS) });
}

export function earlyServers(hint) {
  // From a kept hint: the servers to gather with from the page's opening, or null when
  // the connection should wait for the welcome's (TURN). No hint: none, gather at once.
  if (hint === null || hint === undefined) return [];
  let parsed;
  try {
    parsed = JSON.parse(hint);
  } catch {
    return [];
  }
  if (parsed?.v !== 1) return [];
  if (parsed.relay === true) return null;
  const urls = Array.isArray(parsed.stun) ? parsed.stun : [];
  if (urls.length > MAX_REMEMBERED_URLS || !urls.every(stunUrl)) return [];
  return urls.length ? [{ urls }] : [];
}
