// Device keys certified by an identity key (docs/protocol.md 5.3), the twin of
// peer/device.py: the same bytes, the same checks in the same order, the same
// error codes (tests/web/test_device_vectors.py). Pure apart from the
// signature (WebCrypto, via crypto.js). Keys are hex strings, times Unix ms.

import { ProtocolError, concat, hex, u64be, utf8 } from "./bytes.js";
import { sign, verify } from "./crypto.js";

export const MAGIC = utf8("pmd1");
export const DOMAIN = utf8("pagemesh-device/1\0");
export const MAX_LABEL_BYTES = 64;
const HEADER_BYTES = 4 + 32 + 32 + 8 + 8 + 1;
export const MIN_BYTES = HEADER_BYTES + 64;
export const MAX_BYTES = MIN_BYTES + MAX_LABEL_BYTES;
export const MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000;
export const DEFAULT_LIFETIME_MS = 7 * 24 * 3600 * 1000;
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
export const MAX_DEVICES = 1024;
export const REVOKE_MAGIC = utf8("pmr1");
export const REVOKE_DOMAIN = utf8("pagemesh-revoke/1\0");
export const REVOCATION_BYTES = 4 + 32 + 32 + 8 + 64;
export const MAX_REVOCATIONS = 1024;
const MAX_TIME = BigInt(Number.MAX_SAFE_INTEGER);
const LABEL_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

// A byte order mark is part of a label, as Python's decoder keeps it.
const LABEL_DECODER = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class DelegationError extends ProtocolError {}

function body(identity, device, notBefore, expires, label) {
  const raw = utf8(label);
  return concat(MAGIC, identity, device, u64be(notBefore), u64be(expires), Uint8Array.of(raw.length), raw);
}

export function signedBytes(d) {
  return concat(DOMAIN, body(d.identityBytes, d.deviceBytes, d.notBefore, d.expires, d.label));
}

export function serializeDelegation(d) {
  return concat(body(d.identityBytes, d.deviceBytes, d.notBefore, d.expires, d.label), d.signature);
}

export function validAt(d, nowMs) {
  return d.notBefore - CLOCK_SKEW_MS <= nowMs && nowMs < d.expires;
}

export async function issueDelegation(pair, identity, device, nowMs, lifetimeMs = DEFAULT_LIFETIME_MS, label = "") {
  // A delegation from `identity` (Uint8Array, whose WebCrypto `pair` signs) to `device`.
  if (identity.length !== 32 || device.length !== 32) throw new Error("keys are 32 bytes");
  if (hex(identity) === hex(device)) throw new Error("a key needs no delegation to itself");
  if (!(lifetimeMs > 0 && lifetimeMs <= MAX_LIFETIME_MS)) throw new Error(`a delegation lasts at most ${MAX_LIFETIME_MS} ms`);
  if (!Number.isSafeInteger(nowMs) || nowMs < 0 || nowMs + lifetimeMs > Number.MAX_SAFE_INTEGER) throw new Error("a time out of range");
  if (utf8(label).length > MAX_LABEL_BYTES || LABEL_FORBIDDEN.test(label) || /\p{Cs}/u.test(label)) {
    throw new Error(`a device label is at most ${MAX_LABEL_BYTES} UTF-8 bytes, without control characters`);
  }
  const d = { identityBytes: identity, deviceBytes: device, identity: hex(identity), device: hex(device), notBefore: nowMs, expires: nowMs + lifetimeMs, label };
  d.signature = await sign(pair, signedBytes(d));
  return d;
}

export function parseDelegation(data) {
  // The delegation in `data` (Uint8Array), its form checked; a DelegationError otherwise.
  if (!(data instanceof Uint8Array)) throw new DelegationError("short", "not bytes");
  if (data.length < MIN_BYTES) throw new DelegationError("short", `a delegation is at least ${MIN_BYTES} bytes`);
  if (data.length > MAX_BYTES) throw new DelegationError("long", `a delegation is at most ${MAX_BYTES} bytes`);
  if (hex(data.subarray(0, 4)) !== hex(MAGIC)) throw new DelegationError("magic", "not a delegation (no pmd1)");
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const size = data[HEADER_BYTES - 1];
  if (data.length !== MIN_BYTES + size) throw new DelegationError("length", "the label's length does not match the delegation's");
  let label;
  try {
    label = LABEL_DECODER.decode(data.subarray(HEADER_BYTES, HEADER_BYTES + size));
  } catch {
    throw new DelegationError("label", "the label is not UTF-8");
  }
  if (LABEL_FORBIDDEN.test(label)) throw new DelegationError("label", "the label has a control character");
  const notBefore = view.getBigUint64(68);
  const expires = view.getBigUint64(76);
  if (notBefore > MAX_TIME || expires > MAX_TIME || expires <= notBefore) {
    throw new DelegationError("times", "not_before must come before expires, below 2^53");
  }
  if (expires - notBefore > BigInt(MAX_LIFETIME_MS)) throw new DelegationError("lifetime", `a delegation lasts at most ${MAX_LIFETIME_MS} ms`);
  const identityBytes = data.slice(4, 36);
  const deviceBytes = data.slice(36, 68);
  if (hex(identityBytes) === hex(deviceBytes)) throw new DelegationError("self", "a delegation to the identity key itself");
  return {
    identityBytes,
    deviceBytes,
    identity: hex(identityBytes),
    device: hex(deviceBytes),
    notBefore: Number(notBefore),
    expires: Number(expires),
    label,
    signature: data.slice(data.length - 64),
  };
}

function revocationBody(r) {
  return concat(REVOKE_MAGIC, r.identityBytes, r.deviceBytes, u64be(r.revokedAt));
}

export function serializeRevocation(r) {
  return concat(revocationBody(r), r.signature);
}

export async function issueRevocation(pair, identity, device, nowMs) {
  // The identity key (its WebCrypto `pair`) takes back its delegations to `device`, for good.
  if (identity.length !== 32 || device.length !== 32 || hex(identity) === hex(device)) throw new Error("two different 32-byte keys");
  if (!Number.isSafeInteger(nowMs) || nowMs < 0) throw new Error("a time out of range");
  const r = { identityBytes: identity, deviceBytes: device, identity: hex(identity), device: hex(device), revokedAt: nowMs };
  r.signature = await sign(pair, concat(REVOKE_DOMAIN, revocationBody(r)));
  return r;
}

export async function parseRevocation(data) {
  // A revocation from anyone (its signature is what counts), checked; a DelegationError
  // with code `revocation` for any defect, `signature` for a signature not the identity's.
  if (!(data instanceof Uint8Array) || data.length !== REVOCATION_BYTES) throw new DelegationError("revocation", `a revocation is ${REVOCATION_BYTES} bytes`);
  if (hex(data.subarray(0, 4)) !== hex(REVOKE_MAGIC)) throw new DelegationError("revocation", "not a revocation (no pmr1)");
  const revokedAt = new DataView(data.buffer, data.byteOffset, data.length).getBigUint64(68);
  const identityBytes = data.slice(4, 36);
  const deviceBytes = data.slice(36, 68);
  if (revokedAt > MAX_TIME || hex(identityBytes) === hex(deviceBytes)) throw new DelegationError("revocation", "a time past 2^53, or a key revoking itself");
  const r = { identityBytes, deviceBytes, identity: hex(identityBytes), device: hex(deviceBytes), revokedAt: Number(revokedAt), signature: data.slice(76) };
  if (!(await verify(identityBytes, concat(REVOKE_DOMAIN, revocationBody(r)), r.signature))) {
    throw new DelegationError("signature", "the identity key did not sign this revocation");
  }
  return r;
}

export async function checkDelegation(data, member, nowMs) {
  // A delegation `member` (hex) sent over its own link: signed by the identity it names,
  // for `member`'s key, valid at `nowMs`. A DelegationError otherwise.
  const d = parseDelegation(data);
  if (d.device !== member) throw new DelegationError("wrong-device", "the delegation is for another device key");
  if (nowMs < d.notBefore - CLOCK_SKEW_MS) throw new DelegationError("not-yet-valid", "the delegation is not valid yet");
  if (nowMs >= d.expires) throw new DelegationError("expired", "the delegation has expired");
  if (!(await verify(d.identityBytes, signedBytes(d), d.signature))) {
    throw new DelegationError("signature", "the identity key did not sign this delegation");
  }
  return d;
}

export class Devices {
  // Which member keys speak for which identity (checked delegations, the most recent
  // `maxDevices` kept). A key with no delegation valid now is its own person.
  constructor(maxDevices = MAX_DEVICES, maxRevocations = MAX_REVOCATIONS) {
    this.maxDevices = maxDevices;
    this.maxRevocations = maxRevocations;
    this.byDevice = new Map();
    this.revokedPairs = new Map(); // "identity:device" -> revocation, oldest first
    this.senders = new Map(); // "identity:device" -> who gave it first (hex; null: ours)
  }

  revoke(r, sender = null) {
    // Keep a checked revocation that `sender` (the member whose link carried it, hex;
    // null: one of ours, never pushed out) gave; whether it took a device away from its
    // person now. When full, one that takes no device away goes: the oldest of the
    // sender that gave most of those (as peer/device.py Devices.revoke).
    const pair = `${r.identity}:${r.device}`;
    if (!this.revokedPairs.has(pair) && this.revokedPairs.size >= this.maxRevocations) {
      const idle = this.idle();
      if (idle === null) return false;
      this.revokedPairs.delete(idle);
      this.senders.delete(idle);
    }
    this.revokedPairs.set(pair, r);
    if (!this.senders.has(pair) || sender === null) this.senders.set(pair, sender);
    return this.matters(pair);
  }

  idle() {
    // The revocation to push out of a full book: of the sender with the most that take
    // no device away (ours never), its oldest.
    const counts = new Map();
    for (const [pair, sender] of this.senders) {
      if (sender !== null && !this.matters(pair)) counts.set(sender, (counts.get(sender) ?? 0) + 1);
    }
    if (counts.size === 0) return null;
    const most = Math.max(...counts.values());
    let heaviest = null;
    for (const [sender, n] of counts) {
      if (n === most) {
        heaviest = sender;
        break;
      }
    }
    for (const [pair, sender] of this.senders) {
      if (sender === heaviest && !this.matters(pair)) return pair;
    }
    return null;
  }

  matters(pair) {
    const [identity, device] = pair.split(":");
    return this.byDevice.get(device)?.identity === identity;
  }

  revocations() {
    // Every revocation kept, oldest first, with who gave it (null: ours).
    return [...this.revokedPairs].map(([pair, r]) => [r, this.senders.get(pair) ?? null]);
  }

  revoked(identity, device) {
    return this.revokedPairs.has(`${identity}:${device}`);
  }

  add(d) {
    // Keep a checked delegation; whether the device's person or label changed.
    const old = this.byDevice.get(d.device);
    this.byDevice.delete(d.device);
    this.byDevice.set(d.device, d);
    while (this.byDevice.size > this.maxDevices) this.byDevice.delete(this.byDevice.keys().next().value);
    return !old || old.identity !== d.identity || old.label !== d.label;
  }

  forget(device) {
    this.byDevice.delete(device);
  }

  delegation(device, nowMs) {
    const d = this.byDevice.get(device);
    return d && validAt(d, nowMs) && !this.revoked(d.identity, device) ? d : null;
  }

  personOf(key, nowMs) {
    return this.delegation(key, nowMs)?.identity ?? key;
  }

  get size() {
    return this.byDevice.size;
  }
}

export function people(keys, devices, nowMs) {
  // Member keys grouped by person: Map identity -> Set of the keys that speak for it now.
  const grouped = new Map();
  for (const key of keys) {
    const person = devices.personOf(key, nowMs);
    if (!grouped.has(person)) grouped.set(person, new Set());
    grouped.get(person).add(key);
  }
  return grouped;
}
