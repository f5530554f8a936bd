// A person's identity in a passphrase-encrypted file, as peer/identity_file.py:
// the same JSON bytes, checks in the same order, the same error codes
// (docs/identity.md is the format's contract). Everything here is WebCrypto:
// PBKDF2-HMAC-SHA256 for the key, AES-256-GCM for the seed and the name, and
// Ed25519 (PKCS#8 import) to check the seed against the file's public key.
//
// Errors: IdentityFileError (with a `code`) for anything wrong with a file or
// its passphrase; TypeError and RangeError for a caller's misuse on export.

import { base64, concat, fromBase64, hex, utf8 } from "./bytes.js";

export const MARKER = "pagemesh-identity";
export const VERSION = 1; // a file without contacts
export const CONTACTS_VERSION = 2; // a file with contacts: the seed, then a JSON object
export const KDF = "pbkdf2-sha256";
export const DEFAULT_ITERATIONS = 600_000;
export const MIN_ITERATIONS = 100_000;
export const MAX_ITERATIONS = 10_000_000;
export const MAX_NAME_BYTES = 256;
export const MAX_FILE_BYTES = 1 << 20;
export const MAX_CONTACTS = 1000;
export const MAX_PETNAME = 64;
export const MAX_PAGE_BYTES = 1024;
export const FIELDS = Object.freeze(["pagemesh-identity", "kdf", "iter", "salt", "nonce", "ct", "pub"]);

const SEED_BYTES = 32;
const SALT_BYTES = 16;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MIN_CT = SEED_BYTES + TAG_BYTES;
const MAX_CT = SEED_BYTES + MAX_NAME_BYTES + TAG_BYTES;
const MAX_CT_2 = Math.floor((MAX_FILE_BYTES * 3) / 4) - 512;
const PUB_HEX = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
// RFC 8410 section 7: PKCS#8 PrivateKeyInfo for Ed25519 is these 16 bytes, then the seed.
const PKCS8_ED25519 = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
);
// ignoreBOM keeps a leading U+FEFF of a stored name, as Python's "utf-8" codec does.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class IdentityFileError extends Error {
  // A file that is not a readable identity file for this passphrase. Codes:
  // too-large, not-identity-file, unsupported-version, unsupported-kdf,
  // iterations-out-of-range, wrong-passphrase, public-key-mismatch, bad-contents.
  constructor(code, message) {
    super(message);
    this.name = "IdentityFileError";
    this.code = code;
  }
}

const fail = (code, message) => {
  throw new IdentityFileError(code, message);
};

// --- the file's bytes ---

export function parseIdentityFile(data, { minIterations = MIN_ITERATIONS } = {}) {
  // The checked fields of a file (a string, or its bytes), not yet decrypted;
  // `publicKey` lets a page show whose key a file holds before asking for the passphrase.
  const obj = jsonObject(data);
  if (!Object.hasOwn(obj, MARKER)) fail("not-identity-file", `not an identity file (no "${MARKER}" field)`);
  const version = obj[MARKER];
  if (version !== VERSION && version !== CONTACTS_VERSION) {
    fail("unsupported-version", `unsupported identity file version ${show(version)}`);
  }
  for (const field of FIELDS) {
    if (!Object.hasOwn(obj, field)) fail("not-identity-file", `not an identity file (no "${field}")`);
  }
  const extra = Object.keys(obj).filter((k) => !FIELDS.includes(k)).sort();
  if (extra.length) fail("not-identity-file", `not an identity file (unknown field ${show(extra[0])})`);
  if (obj.kdf !== KDF) fail("unsupported-kdf", `unsupported kdf ${show(obj.kdf)}`);
  const iterations = checkIterations(obj.iter, minIterations);
  const salt = base64Field(obj, "salt", SALT_BYTES);
  const nonce = base64Field(obj, "nonce", NONCE_BYTES);
  const ciphertext = base64Field(obj, "ct");
  const most = version === VERSION ? MAX_CT : MAX_CT_2;
  if (ciphertext.length < MIN_CT || ciphertext.length > most) {
    fail("not-identity-file", `"ct" must hold ${MIN_CT} to ${most} bytes`);
  }
  if (typeof obj.pub !== "string" || !PUB_HEX.test(obj.pub)) {
    fail("not-identity-file", '"pub" must be 64 lowercase hex digits');
  }
  return { version, kdf: KDF, iterations, salt, nonce, ciphertext, publicKey: obj.pub };
}

export function serializeIdentityFile(file) {
  // JSON.stringify(obj, null, 2) and a newline: the bytes Python's json.dumps(indent=2) writes.
  const obj = {
    [MARKER]: file.version ?? VERSION,
    kdf: KDF,
    iter: file.iterations,
    salt: base64(file.salt),
    nonce: base64(file.nonce),
    ct: base64(file.ciphertext),
    pub: file.publicKey,
  };
  return JSON.stringify(obj, null, 2) + "\n";
}

export function associatedData(file) {
  // What AES-GCM authenticates besides the ciphertext (docs/identity.md, "Associated data").
  const kdf = utf8(file.kdf);
  const iter = new Uint8Array(4);
  new DataView(iter.buffer).setUint32(0, file.iterations);
  const pub = Uint8Array.from(file.publicKey.match(/../g), (byte) => parseInt(byte, 16));
  return concat(utf8(MARKER), Uint8Array.of(file.version, kdf.length), kdf, iter, file.salt, pub);
}

function jsonObject(data) {
  let text;
  if (typeof data === "string") {
    // UTF-8 takes at least as many bytes as UTF-16 code units: a cheap check first.
    if (data.length > MAX_FILE_BYTES || utf8(data).length > MAX_FILE_BYTES) tooLarge();
    text = data.startsWith("\uFEFF") ? data.slice(1) : data;
  } else if (data instanceof Uint8Array || data instanceof ArrayBuffer) {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    if (bytes.length > MAX_FILE_BYTES) tooLarge();
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); // drops one leading BOM
    } catch {
      fail("not-identity-file", "not an identity file (not JSON)");
    }
  } else {
    throw new TypeError("an identity file is a string or its bytes");
  }
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    fail("not-identity-file", "not an identity file (not JSON)");
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    fail("not-identity-file", "not an identity file (not a JSON object)");
  }
  return obj;
}

function tooLarge() {
  fail("too-large", `an identity file has at most ${MAX_FILE_BYTES} bytes`);
}

function checkIterations(value, minIterations) {
  // An integral JSON number. A number too big for a double parses as Infinity here
  // and as a big integer in Python: out of range in both.
  if (typeof value !== "number" || (Number.isFinite(value) && !Number.isInteger(value))) {
    fail("not-identity-file", '"iter" must be an integer');
  }
  if (!(value >= minIterations && value <= MAX_ITERATIONS)) {
    fail("iterations-out-of-range", `iterations ${show(value)} out of range (${minIterations} to ${MAX_ITERATIONS})`);
  }
  return value;
}

function base64Field(obj, field, size) {
  const value = obj[field];
  let raw;
  try {
    if (typeof value !== "string" || !BASE64.test(value) || value.length % 4 !== 0) throw new Error();
    raw = fromBase64(value);
  } catch {
    fail("not-identity-file", `"${field}" must be base64`);
  }
  // Canonical only (padding, no stray bits): one file has one spelling in both readers.
  if (base64(raw) !== value) fail("not-identity-file", `"${field}" must be base64`);
  if (size !== undefined && raw.length !== size) fail("not-identity-file", `"${field}" must hold ${size} bytes`);
  return raw;
}

function show(value) {
  // A value from the file, quoted and cut short for an error message.
  let text = "?";
  if (typeof value === "number") text = String(value);
  else if (typeof value === "string" || typeof value === "boolean" || value === null) text = JSON.stringify(value);
  return text.length <= 40 ? text : text.slice(0, 37) + "...";
}

// --- export and import ---

export async function exportIdentity(
  seedBytes,
  passphrase,
  name = null,
  { iterations = DEFAULT_ITERATIONS, randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n)), contacts = [] } = {},
) {
  // The text of an identity file holding the 32-byte seed (and the name; "" is no
  // name), encrypted under `passphrase`. Fewer than MIN_ITERATIONS are for tests.
  if (!(seedBytes instanceof Uint8Array) || seedBytes.length !== SEED_BYTES) {
    throw new TypeError("an Ed25519 seed is a Uint8Array of 32 bytes");
  }
  if (typeof passphrase !== "string" || passphrase === "") throw new TypeError("an empty passphrase protects nothing");
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(`iterations must be 1 to ${MAX_ITERATIONS}`);
  }
  // Version 1 without contacts (every reader since the first reads it), 2 with them.
  const version = contacts.length ? CONTACTS_VERSION : VERSION;
  const contents = concat(seedBytes, version === VERSION ? nameBytes(name) : contentsJson(name, contacts));
  const salt = randomBytes(SALT_BYTES);
  const nonce = randomBytes(NONCE_BYTES);
  const publicKey = hex(await publicKeyFromSeed(seedBytes));
  const file = { version, kdf: KDF, iterations, salt, nonce, publicKey };
  const key = await deriveKey(passphraseBytes(passphrase, TypeError), salt, iterations, "encrypt");
  const params = { name: "AES-GCM", iv: nonce, additionalData: associatedData(file) };
  const sealed = await crypto.subtle.encrypt(params, key, contents);
  return serializeIdentityFile({ ...file, ciphertext: new Uint8Array(sealed) });
}

export async function importIdentity(text, passphrase, { minIterations = MIN_ITERATIONS } = {}) {
  // { seed, name (or null), publicKey (hex) } from an identity file, or IdentityFileError.
  const file = parseIdentityFile(text, { minIterations });
  const secret = passphraseBytes(passphrase, null);
  const key = await deriveKey(secret, file.salt, file.iterations, "decrypt");
  const params = { name: "AES-GCM", iv: file.nonce, additionalData: associatedData(file) };
  let contents;
  try {
    contents = new Uint8Array(await crypto.subtle.decrypt(params, key, file.ciphertext));
  } catch {
    fail("wrong-passphrase", "wrong passphrase (or the file was altered)");
  }
  const seed = contents.slice(0, SEED_BYTES);
  if (hex(await publicKeyFromSeed(seed)) !== file.publicKey) {
    fail("public-key-mismatch", "the file's public key is not the one its seed gives");
  }
  if (file.version === CONTACTS_VERSION) {
    return { seed, ...parseContentsJson(contents.subarray(SEED_BYTES)), publicKey: file.publicKey };
  }
  let name;
  try {
    name = strictUtf8.decode(contents.subarray(SEED_BYTES));
  } catch {
    fail("bad-contents", "the stored name is not UTF-8");
  }
  return { seed, name: name || null, publicKey: file.publicKey, contacts: [] };
}

// --- version 2: the seed, then {"name"?, "contacts": [...]} (docs/identity.md) ---

function contentsJson(name, contacts) {
  const raw = nameBytes(name);
  if (contacts.length > MAX_CONTACTS) throw new RangeError(`at most ${MAX_CONTACTS} contacts`);
  const body = {};
  if (raw.length) body.name = name;
  body.contacts = contacts.map((c) => {
    checkContact(c, (message) => new RangeError(message));
    const entry = { key: hex(c.key), petname: c.petname };
    if (c.x && c.sig) {
      entry.x = hex(c.x);
      entry.sig = base64(c.sig);
    }
    if (c.room) {
      entry.room = hex(c.room);
      if (c.page) entry.page = c.page;
    }
    return entry;
  });
  return utf8(JSON.stringify(body));
}

function checkContact(c, error) {
  if (!(c.key instanceof Uint8Array) || c.key.length !== 32) throw error("a contact's key is 32 bytes");
  if (typeof c.petname !== "string" || !c.petname.isWellFormed() || [...c.petname].length < 1 || [...c.petname].length > MAX_PETNAME) {
    throw error(`a petname has 1 to ${MAX_PETNAME} characters`);
  }
  if (!c.x !== !c.sig || (c.x && (c.x.length !== 32 || c.sig.length !== 64))) {
    throw error("a contact card is an X25519 key of 32 bytes and a signature of 64");
  }
  if (c.room && c.room.length !== 20) throw error("a room is 20 bytes");
  if (c.page !== null && c.page !== undefined && (typeof c.page !== "string" || utf8(c.page).length > MAX_PAGE_BYTES)) {
    throw error(`a page URL has at most ${MAX_PAGE_BYTES} bytes`);
  }
}

const bad = (message) => new IdentityFileError("bad-contents", message);

function hexField(entry, field, size) {
  const value = entry[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || value.length !== 2 * size || !/^[0-9a-f]*$/.test(value)) {
    throw bad(`a contact's "${field}" is ${2 * size} lowercase hex digits`);
  }
  return Uint8Array.from(value.match(/../g), (byte) => parseInt(byte, 16));
}

function parseContentsJson(data) {
  let body;
  try {
    body = JSON.parse(strictUtf8.decode(data));
  } catch {
    throw bad("the contents are not UTF-8 JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("the contents are not a JSON object");
  const name = body.name ?? null;
  if (name !== null && (typeof name !== "string" || utf8(name).length < 1 || utf8(name).length > MAX_NAME_BYTES)) {
    throw bad(`the name is a string of 1 to ${MAX_NAME_BYTES} UTF-8 bytes`);
  }
  if (!Array.isArray(body.contacts) || body.contacts.length > MAX_CONTACTS) {
    throw bad(`the contacts are a list of at most ${MAX_CONTACTS}`);
  }
  const contacts = body.contacts.map((entry) => {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw bad("a contact is a JSON object");
    const key = hexField(entry, "key", 32);
    if (key === null || typeof entry.petname !== "string") throw bad('a contact has a "key" and a "petname"');
    if (entry.page !== undefined && entry.page !== null && typeof entry.page !== "string") throw bad('a contact\'s "page" is a string');
    let sig = null;
    if (entry.sig !== undefined && entry.sig !== null) {
      try {
        if (typeof entry.sig !== "string" || entry.sig.length !== 88 || !BASE64.test(entry.sig)) throw new Error();
        sig = fromBase64(entry.sig);
      } catch {
        throw bad('a contact\'s "sig" is base64 of 64 bytes');
      }
    }
    const contact = { key, petname: entry.petname, x: hexField(entry, "x", 32), sig, room: hexField(entry, "room", 20), page: entry.page ?? null };
    checkContact(contact, bad);
    return contact;
  });
  return { name, contacts };
}

function nameBytes(name) {
  if (name === null || name === undefined) return new Uint8Array(0);
  if (typeof name !== "string" || !name.isWellFormed()) throw new TypeError("the name is not valid Unicode");
  const raw = utf8(name);
  if (raw.length > MAX_NAME_BYTES) throw new RangeError(`a name has at most ${MAX_NAME_BYTES} UTF-8 bytes`);
  return raw;
}

function passphraseBytes(passphrase, misuse) {
  // NFC: the same words typed on two systems give the same bytes. A lone surrogate
  // cannot be UTF-8 (TextEncoder would silently change it), so it is refused.
  if (typeof passphrase !== "string" || !passphrase.isWellFormed()) {
    const message = "the passphrase is not valid Unicode (a lone surrogate)";
    if (misuse) throw new misuse(message);
    fail("wrong-passphrase", message);
  }
  return utf8(passphrase.normalize("NFC"));
}

async function deriveKey(secret, salt, iterations, usage) {
  const base = await crypto.subtle.importKey("raw", secret, "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    [usage],
  );
}

// --- the seed as a WebCrypto key pair ---

export async function publicKeyFromSeed(seed) {
  // WebCrypto computes no public key from a seed directly: import the seed as a
  // short-lived extractable key, and read the public half ("x") of its JWK.
  const key = await crypto.subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed), { name: "Ed25519" }, true, ["sign"]);
  const { x } = await crypto.subtle.exportKey("jwk", key);
  return fromBase64(x.replace(/-/g, "+").replace(/_/g, "/") + "=");
}

export async function keyPairFromSeed(seed) {
  // The key pair a page signs with, from an imported seed: the private key not
  // extractable (as crypto.js generateIdentity makes it), the public key as usual.
  const pkcs8 = concat(PKCS8_ED25519, seed);
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  const raw = await publicKeyFromSeed(seed);
  const publicKey = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, true, ["verify"]);
  return { privateKey, publicKey };
}
