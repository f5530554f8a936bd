// Signed session descriptions (docs/protocol.md 5.1), as peer/sdp.py: the
// sender signs the DTLS fingerprints with its Ed25519 key, so a node that
// swaps the certificate or replays an old offer is caught. A relink ("offer
// me a new link") is signed the same way, with kind "relink" and no SDP: a
// node cannot forge one for a member, nor replay one.

import { ProtocolError, fromHex, hex, utf8 } from "./bytes.js";
import { randomBytes, sign, verify } from "./crypto.js";

export const MAX_SDP_BYTES = 16384;
export const MAX_LIFETIME = 120;
export const RELINK = "relink";
export const KINDS = Object.freeze(["offer", "answer", RELINK]);
const FINGERPRINT = /^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$/;

export function fingerprints(sdp) {
  const found = new Set();
  for (const line of sdp.split(/\r?\n/)) {
    const m = FINGERPRINT.exec(line);
    if (m) found.add(`${m[1].toLowerCase()} ${m[2].toUpperCase()}`);
  }
  return [...found].sort();
}

function signedBytes(desc) {
  const fields = [desc.kind, desc.room, desc.from, desc.to, fingerprints(desc.sdp), desc.nonce, desc.expires];
  return utf8("pagemesh-sdp/1\0" + JSON.stringify(fields));
}

export async function signDescription(kind, sdp, room, from, to, identity, now, lifetime = 60) {
  if (kind === RELINK) {
    if (sdp) throw new ProtocolError("malformed", "a relink carries no SDP");
  } else if (!fingerprints(sdp).length) {
    throw new ProtocolError("no-fingerprint", "an SDP without a DTLS fingerprint");
  }
  const desc = { kind, sdp, room, from, to, nonce: hex(randomBytes(16)), expires: Math.floor(now) + lifetime };
  desc.sig = hex(await sign(identity, signedBytes(desc)));
  return desc;
}

export function parseDescription(data) {
  if (typeof data !== "object" || data === null) throw new ProtocolError("malformed", "malformed signed description");
  const { kind, sdp, room, from, to, nonce, expires, sig } = data;
  if (!KINDS.includes(kind)) throw new ProtocolError("malformed", "kind must be offer, answer or relink");
  if (typeof sdp !== "string" || sdp.length > MAX_SDP_BYTES) throw new ProtocolError("malformed", "sdp missing or too large");
  for (const [value, size] of [[room, 20], [from, 32], [to, 32], [nonce, 16], [sig, 64]]) fromHex(value, size);
  if (!Number.isSafeInteger(expires)) throw new ProtocolError("malformed", "expires must be an integer");
  return { kind, sdp, room, from, to, nonce, expires, sig };
}

export class ReplayGuard {
  constructor(capacity = 10000) {
    this.capacity = capacity;
    this.seen = new Map(); // nonce -> expires, in insertion order
  }

  checkAndRemember(nonce, expires, now) {
    for (const [old, until] of this.seen) {
      if (until > now && this.seen.size <= this.capacity) break;
      this.seen.delete(old);
    }
    if (this.seen.has(nonce)) throw new ProtocolError("replay", "replayed description (nonce already seen)");
    this.seen.set(nonce, expires);
  }
}

export async function verifyDescription(desc, room, sender, me, now, replays) {
  if (desc.room !== room || desc.from !== sender || desc.to !== me) {
    throw new ProtocolError("wrong-pair", "description is for another room or pair of peers");
  }
  if (desc.expires <= now) throw new ProtocolError("expired", "description expired");
  if (desc.expires > now + MAX_LIFETIME) throw new ProtocolError("too-long", "description lives too long");
  if (desc.kind === RELINK) {
    if (desc.sdp) throw new ProtocolError("malformed", "a relink carries no SDP");
  } else if (!fingerprints(desc.sdp).length) {
    throw new ProtocolError("no-fingerprint", "description has no DTLS fingerprint");
  }
  if (!(await verify(fromHex(sender), signedBytes(desc), fromHex(desc.sig)))) {
    throw new ProtocolError("bad-signature", "signature does not cover this SDP's fingerprint");
  }
  replays.checkAndRemember(desc.nonce, desc.expires, now);
}
