// Ed25519 and SHA-256 from WebCrypto. Browsers offer `crypto.subtle` only in
// a secure context: a node served over HTTPS, or on localhost.

import { ProtocolError, hex } from "./bytes.js";

export function requireWebCrypto() {
  if (!globalThis.crypto?.subtle) {
    throw new ProtocolError(
      "insecure-context",
      "this page needs a secure context (HTTPS, or a node on localhost) for WebCrypto",
    );
  }
}

export async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

export async function generateIdentity() {
  // The private key never leaves WebCrypto (not extractable); IndexedDB keeps the handle.
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  return pair;
}

export async function publicKeyBytes(pair) {
  return new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
}

export async function sign(pair, message) {
  return new Uint8Array(await crypto.subtle.sign("Ed25519", pair.privateKey, message));
}

const verifiers = new Map(); // public key hex -> the imported key, or the promise of it

export function verifier(publicKey) {
  // `publicKey` imported for verifying, once: a promise of the key, or of null when it is
  // no Ed25519 key. Called ahead (a member's first signature is then one call, not two).
  const id = hex(publicKey);
  let key = verifiers.get(id);
  if (key === undefined) {
    key = crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]).catch(() => null);
    if (verifiers.size > 4096) verifiers.clear();
    verifiers.set(id, key);
  }
  return key;
}

export async function verify(publicKey, message, signature) {
  // True when `signature` is `publicKey`'s over `message`; false for any defect.
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const key = await verifier(publicKey);
  if (key === null) return false;
  try {
    return await crypto.subtle.verify("Ed25519", key, signature, message);
  } catch {
    return false;
  }
}

export function randomBytes(size) {
  return crypto.getRandomValues(new Uint8Array(size));
}
