// Contacts and presence for contacts only (docs/protocol.md 7), the twin of
// peer/friends.py: byte for byte the same cards, pair secrets, slots and sealed
// records (tests/web/test_friends_twins.py). Only WebCrypto: X25519, Ed25519,
// HKDF-SHA256 and AES-256-GCM.

import { ProtocolError, base64, concat, fromBase64, fromHex, hex, packb, u64be, utf8 } from "./bytes.js";
import { verify } from "./crypto.js";

// dht/records.py MAX_EXPIRES_AT: the latest expiry a record may name (Unix seconds).
const MAX_EXPIRES_AT = 2 ** 40;

export const EPOCH_SECONDS = 600;
export const PRESENCE_TTL = 180;
export const PRESENCE_REFRESH = 60;
export const EPOCH_OVERLAP = 120;
export const PAD_TO = 256;
export const MAX_PAGE_BYTES = 1024;
export const MAX_PETNAME = 64;
export const MAX_CONTACTS = 1000;
const MAX_AHEAD = 3600 + 60;

const CARD_CONTEXT = utf8("pagemesh-card/1\0");
const X25519_INFO = utf8("pagemesh-friends/1 x25519");
const PAIR_INFO = utf8("pagemesh-pair/1\0");
const SLOT_INFO = utf8("pagemesh-presence/1\0");
const DM_INFO = utf8("pagemesh-dm/1\0");
// PKCS#8 wrappers of a raw 32-byte private key (RFC 8410): WebCrypto imports no raw private keys.
const PKCS8_X25519 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20);
const PKCS8_ED25519 = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20);

export class PresenceError extends ProtocolError {
  constructor(message) {
    super("presence", message);
  }
}

async function hkdf(ikm, info, length) {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, key, length * 8);
  return new Uint8Array(bits);
}

function fromBase64url(text) {
  return fromBase64(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
}

export function x25519Seed(identitySeed) {
  // One identity, one X25519 key, on every device its identity file moves to.
  if (identitySeed.length !== 32) throw new RangeError("an Ed25519 seed has 32 bytes");
  return hkdf(identitySeed, X25519_INFO, 32);
}

async function importPrivate(pkcs8, seed, algorithm, usages) {
  const key = await crypto.subtle.importKey("pkcs8", concat(pkcs8, seed), algorithm, true, usages);
  const { x } = await crypto.subtle.exportKey("jwk", key);
  return { key, publicKey: fromBase64url(x) };
}

export async function x25519Public(xPrivate) {
  return (await importPrivate(PKCS8_X25519, xPrivate, { name: "X25519" }, ["deriveBits"])).publicKey;
}

export function cardMessage(key, x) {
  return concat(CARD_CONTEXT, key, x);
}

export async function makeCard(signer, key, xPrivate) {
  // Our card: `signer(message)` is the identity's Ed25519 signature (crypto.js sign).
  const x = await x25519Public(xPrivate);
  return { key, x, sig: await signer(cardMessage(key, x)) };
}

export function cardFrame(card) {
  return { t: "card", x: hex(card.x), sig: base64(card.sig) };
}

export async function parseCardFrame(member, frame) {
  // The verified card in a `card` control frame from `member`; PresenceError if not.
  if (typeof frame !== "object" || frame === null || frame.t !== "card") throw new PresenceError("not a card frame");
  const { x, sig } = frame;
  if (typeof x !== "string" || !/^[0-9a-f]{64}$/.test(x)) throw new PresenceError("card.x: expected 64 lower-case hex digits");
  if (typeof sig !== "string" || sig.length !== 88) throw new PresenceError("card.sig: expected base64 of 64 bytes");
  let raw;
  try {
    raw = fromBase64(sig);
  } catch {
    throw new PresenceError("card: bad base64");
  }
  const card = { key: member, x: fromHex(x, 32), sig: raw };
  if (raw.length !== 64 || !(await verify(member, cardMessage(member, card.x), raw))) {
    throw new PresenceError("card: the signature does not verify");
  }
  return card;
}

function compare(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export async function pairSecret(mine, myXPrivate, theirs) {
  // X25519(mine, theirs), HKDF'd with both (Ed25519, X25519) pairs, the lower Ed25519 key first.
  const { key } = await importPrivate(PKCS8_X25519, myXPrivate, { name: "X25519" }, ["deriveBits"]);
  const myX = await x25519Public(myXPrivate);
  let shared;
  try {
    const them = await crypto.subtle.importKey("raw", theirs.x, { name: "X25519" }, false, []);
    shared = new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: them }, key, 256));
  } catch {
    throw new PresenceError("a low-order X25519 key");
  }
  const me = [mine, myX];
  const other = [theirs.key, theirs.x];
  const [low, high] = compare(concat(...me), concat(...other)) <= 0 ? [me, other] : [other, me];
  return hkdf(shared, concat(PAIR_INFO, low[0], low[1], high[0], high[1]), 32);
}

export function dmRoom(secret) {
  return hkdf(secret, DM_INFO, 20);
}

export function epochOf(now) {
  return Math.floor(now / EPOCH_SECONDS);
}

export function readEpochs(now) {
  const epoch = epochOf(now);
  return now - epoch * EPOCH_SECONDS < EPOCH_OVERLAP ? [epoch, epoch - 1] : [epoch];
}

export async function presenceSlot(secret, publisher, reader, epoch) {
  const out = await hkdf(secret, concat(SLOT_INFO, publisher, reader, u64be(epoch)), 84);
  const signingSeed = out.slice(20, 52);
  const signer = await importPrivate(PKCS8_ED25519, signingSeed, { name: "Ed25519" }, ["sign"]);
  return { dhtKey: out.slice(0, 20), signingSeed, aesKey: out.slice(52, 84), publisher: signer.publicKey, signKey: signer.key };
}

export function noteJson(note) {
  // Key order as peer/friends.py writes them: v, on, exp, room, layer, page, node, dm.
  const body = { v: 1, on: note.online, exp: note.expires };
  if (note.room) {
    body.room = hex(note.room);
    body.layer = note.layer ?? 0;
    if (note.page) body.page = note.page;
    if (note.node) body.node = note.node;
  }
  if (note.dm) body.dm = true; // a direct message waits for this contact (7.4)
  return utf8(JSON.stringify(body));
}

function pad(data) {
  const extra = (PAD_TO - (data.length % PAD_TO)) % PAD_TO;
  return concat(data, new Uint8Array(extra).fill(0x20));
}

function aesKey(raw, usage) {
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, [usage]);
}

export async function sealPresence(slot, note, seq, nonce) {
  // A signed DHT record (docs/protocol.md 1.4) carrying `note` for the slot's reader.
  const plain = noteJson(note);
  if (plain.length > 2048 - 12 - 16 - PAD_TO) throw new RangeError("the presence is too large for a record");
  const aad = concat(slot.dhtKey, slot.publisher);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, await aesKey(slot.aesKey, "encrypt"), pad(plain)),
  );
  const value = concat(nonce, sealed);
  const payload = packb(["pagemesh-record/1", slot.dhtKey, slot.publisher, seq, note.expires, value]);
  const signature = new Uint8Array(await crypto.subtle.sign("Ed25519", slot.signKey, payload));
  return { key: slot.dhtKey, publisher: slot.publisher, seq, expiresAt: note.expires, value, signature };
}

export function parseNote(data) {
  if (data.length > 2048) throw new PresenceError("a presence is at most 2048 bytes");
  let body;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    throw new PresenceError("a presence is UTF-8 JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body) || body.v !== 1) {
    throw new PresenceError("a presence is a version 1 object");
  }
  if (typeof body.on !== "boolean") throw new PresenceError("presence.on: expected true or false");
  if (!Number.isSafeInteger(body.exp) || body.exp < 0 || body.exp >= MAX_EXPIRES_AT) throw new PresenceError("presence.exp: expected Unix seconds");
  const note = { online: body.on, expires: body.exp, room: null, layer: null, page: null, node: null };
  if ("room" in body) {
    if (typeof body.room !== "string" || !/^[0-9a-f]{40}$/i.test(body.room)) throw new PresenceError("presence.room: expected 40 hex digits");
    note.room = fromHex(body.room.toLowerCase(), 20);
    if (!Number.isSafeInteger(body.layer) || body.layer < 0 || body.layer >= 65536) throw new PresenceError("presence.layer: expected an integer in 0..65535");
    note.layer = body.layer;
    if (body.page !== undefined && body.page !== null) {
      if (typeof body.page !== "string" || utf8(body.page).length > MAX_PAGE_BYTES || !/^https?:\/\//.test(body.page)) {
        throw new PresenceError("presence.page: expected an http(s) URL");
      }
      note.page = body.page;
    }
    if (body.node !== undefined && body.node !== null) {
      if (!isNodeUrl(body.node)) {
        throw new PresenceError("presence.node: expected a ws:// or wss:// URL");
      }
      note.node = body.node;
    }
  }
  note.dm = false;
  if ("dm" in body) {
    if (typeof body.dm !== "boolean") throw new PresenceError("presence.dm: expected true or false");
    note.dm = body.dm;
  }
  return note;
}

function isNodeUrl(text) {
  // As signaling/rooms.py is_node_url: ws:// or wss://, a host, a port if any, a path if
  // any; no user, query or fragment; printable ASCII without spaces, at most 300 characters.
  if (typeof text !== "string" || text.length > 300 || !/^[\x21-\x7e]*$/.test(text)) return false;
  let url;
  try {
    url = new URL(text);
  } catch {
    return false;
  }
  return ["ws:", "wss:"].includes(url.protocol) && url.hostname !== "" && !url.username && !url.password && !text.includes("?") && !text.includes("#");
}

function same(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export async function openPresence(slot, record, now) {
  // The note in `record` if the slot's publisher made it; PresenceError otherwise.
  if (!same(record.key, slot.dhtKey) || !same(record.publisher, slot.publisher)) throw new PresenceError("not this slot's record");
  if (record.expiresAt <= now || record.expiresAt > now + MAX_AHEAD) throw new PresenceError("the record has expired, or expires too far ahead");
  const payload = packb(["pagemesh-record/1", record.key, record.publisher, record.seq, record.expiresAt, record.value]);
  if (!(await verify(record.publisher, payload, record.signature))) throw new PresenceError("the record's signature does not verify");
  if (record.value.length < 28) throw new PresenceError("a sealed presence is too short");
  let plain;
  try {
    const aad = concat(record.key, record.publisher);
    plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: record.value.slice(0, 12), additionalData: aad },
        await aesKey(slot.aesKey, "decrypt"),
        record.value.slice(12),
      ),
    );
  } catch {
    throw new PresenceError("the presence does not decrypt");
  }
  const note = parseNote(plain);
  if (note.expires !== record.expiresAt) throw new PresenceError("the presence's expiry is not the record's");
  return note;
}

// --- records on the client API's wire (docs/protocol.md 7.3) ---

export function recordToWire(record) {
  return [hex(record.key), hex(record.publisher), record.seq, record.expiresAt, base64(record.value), base64(record.signature)];
}

export function recordFromWire(value) {
  if (!Array.isArray(value) || value.length !== 6) throw new PresenceError("a record is a list of 6 fields");
  const [key, publisher, seq, expiresAt, data, sig] = value;
  if (!Number.isSafeInteger(seq) || seq < 0 || !Number.isSafeInteger(expiresAt) || expiresAt < 0 || expiresAt > MAX_EXPIRES_AT) {
    throw new PresenceError("record seq and expiry are integers in range");
  }
  // As signaling/protocol.py reads one: a value of at most 4096 base64 characters, a
  // signature of 64 bytes, canonical base64 only.
  const b64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  if (typeof data !== "string" || data.length > 4096 || !b64.test(data) || typeof sig !== "string" || !b64.test(sig)) {
    throw new PresenceError("a record's value and signature are base64");
  }
  let record;
  try {
    record = { key: fromHex(key, 20), publisher: fromHex(publisher, 32), seq, expiresAt, value: fromBase64(data), signature: fromBase64(sig) };
  } catch {
    throw new PresenceError("a record's fields are hex and base64");
  }
  if (record.signature.length !== 64) throw new PresenceError("a record's signature is 64 bytes");
  return record;
}

