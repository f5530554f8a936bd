// Bytes on the wire: hex, base64, UTF-8, and the one msgpack shape a client
// signs (a DHT record's payload, docs/protocol.md section 1.4).

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export class ProtocolError extends Error {
  // A frame or value that breaks the protocol; `code` names the defect.
  constructor(code, message) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

export const utf8 = (text) => encoder.encode(text);
export const fromUtf8 = (bytes) => decoder.decode(bytes);

export function hex(bytes) {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

export function fromHex(text, size) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new ProtocolError("bad-hex", "not a hex string");
  }
  if (size !== undefined && text.length !== 2 * size) {
    throw new ProtocolError("bad-hex", `expected ${size} bytes of hex`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
  return out;
}

export function base64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function fromBase64(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function concat(...parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function u16be(n) {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

export function u32be(n) {
  return Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

export function u64be(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

export function readU64be(bytes) {
  const value = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError("bad-offset", "offset too large");
  return Number(value);
}

// --- msgpack, the subset records use: arrays, str, bin, unsigned integers ---

function packUint(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("an unsigned safe integer");
  if (n < 0x80) return Uint8Array.of(n);
  if (n < 0x100) return Uint8Array.of(0xcc, n);
  if (n < 0x10000) return Uint8Array.of(0xcd, n >> 8, n & 0xff);
  if (n < 0x100000000) return concat(Uint8Array.of(0xce), u32be(n));
  return concat(Uint8Array.of(0xcf), u64be(n));
}

function packStr(text) {
  const data = utf8(text);
  if (data.length < 32) return concat(Uint8Array.of(0xa0 | data.length), data);
  if (data.length < 0x100) return concat(Uint8Array.of(0xd9, data.length), data);
  return concat(Uint8Array.of(0xda), u16be(data.length), data);
}

function packBin(data) {
  if (data.length < 0x100) return concat(Uint8Array.of(0xc4, data.length), data);
  if (data.length < 0x10000) return concat(Uint8Array.of(0xc5), u16be(data.length), data);
  return concat(Uint8Array.of(0xc6), u32be(data.length), data);
}

export function packb(value) {
  // msgpack of a value made of arrays, strings, Uint8Arrays and unsigned
  // integers: the encoding Python's msgpack.packb(use_bin_type=True) gives.
  if (Array.isArray(value)) {
    if (value.length >= 16) throw new RangeError("short arrays only");
    return concat(Uint8Array.of(0x90 | value.length), ...value.map(packb));
  }
  if (typeof value === "string") return packStr(value);
  if (value instanceof Uint8Array) return packBin(value);
  if (typeof value === "number") return packUint(value);
  throw new TypeError(`cannot pack ${typeof value}`);
}

export function tooDeep(text, limit) {
  // JSON text nested deeper than `limit` (brackets outside strings; an unterminated
  // string runs to the end, where JSON.parse fails), checked before parsing.
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // a backslash escapes the next character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > limit) return true;
    } else if ((c === 93 || c === 125) && depth > 0) depth--;
  }
  return false;
}
