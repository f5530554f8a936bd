// File offers and chunk frames (docs/protocol.md 5.2), as peer/files.py.
// A chunk frame is u64be(offset) || SHA-256(data) || data.

import { ProtocolError, concat, fromHex, hex, readU64be, u64be } from "./bytes.js";
import { sha256 } from "./crypto.js";

export const CHUNK_HEADER = 40;
export const DEFAULT_CHUNK = 64 * 1024;
export const MAX_CHUNK = 256 * 1024;
const ID = /^[0-9a-f]{32}$/;
const MIME = /^[\w.+-]+\/[\w.+-]+$/;

export function parseOffer(data, maxSize) {
  if (typeof data !== "object" || data === null) throw new ProtocolError("malformed", "malformed file offer");
  const { id, name, size, mime, sha256: digest } = data;
  const chunk = data.chunk ?? DEFAULT_CHUNK;
  if (typeof id !== "string" || !ID.test(id)) throw new ProtocolError("malformed", "a file id is 32 hex digits");
  if (typeof name !== "string" || name.length < 1 || name.length > 255) {
    throw new ProtocolError("malformed", "a file name has 1..255 characters");
  }
  if (/[/\\\0]/.test(name) || name === "." || name === "..") {
    throw new ProtocolError("malformed", "a file name must not contain a path");
  }
  if (typeof mime !== "string" || !MIME.test(mime)) throw new ProtocolError("malformed", "a mime type looks like type/subtype");
  fromHex(digest, 32);
  if (!Number.isSafeInteger(size) || !Number.isSafeInteger(chunk)) throw new ProtocolError("malformed", "size and chunk are integers");
  if (size < 0 || size > maxSize) throw new ProtocolError("too-large", `file of ${size} bytes is over the limit of ${maxSize}`);
  if (chunk < 1024 || chunk > MAX_CHUNK) throw new ProtocolError("malformed", `chunk size must be in 1024..${MAX_CHUNK}`);
  return { id, name, size, mime, sha256: digest, chunk };
}

export function offerFrame(offer) {
  const { id, name, size, mime, sha256: digest, chunk } = offer;
  return { t: "file-offer", id, name, size, mime, sha256: digest, chunk };
}

export async function chunkFrame(offset, data) {
  return concat(u64be(offset), await sha256(data), data);
}

export class Download {
  // The receiver's side of one transfer: verified chunks, kept in memory.
  constructor(offer) {
    this.offer = offer;
    this.parts = [];
    this.verified = 0;
    this.rejected = 0;
  }

  get complete() {
    return this.verified === this.offer.size;
  }

  async receiveChunk(frame) {
    // Verify the next chunk; ProtocolError when it is not the one expected.
    if (frame.length < CHUNK_HEADER) throw new ProtocolError("short", "chunk frame shorter than its header");
    if (frame.length - CHUNK_HEADER > this.offer.chunk) throw new ProtocolError("too-large", "chunk larger than the offer allows");
    const offset = readU64be(frame);
    const digest = frame.subarray(8, CHUNK_HEADER);
    const data = frame.slice(CHUNK_HEADER);
    if (offset !== this.verified) {
      this.rejected += 1;
      throw new ProtocolError("offset", `chunk at ${offset}, expected ${this.verified}`);
    }
    if (hex(await sha256(data)) !== hex(digest)) {
      this.rejected += 1;
      throw new ProtocolError("corrupt", `chunk at ${offset} corrupted in flight`);
    }
    if (!data.length || this.verified + data.length > this.offer.size) {
      this.rejected += 1;
      throw new ProtocolError("overrun", "chunk runs past the end of the file");
    }
    this.parts.push(data);
    this.verified += data.length;
  }

  async finish() {
    // The whole file as a Blob, once its SHA-256 matches the offer's.
    const blob = new Blob(this.parts, { type: this.offer.mime });
    const digest = hex(await sha256(await blob.arrayBuffer()));
    if (digest !== this.offer.sha256) throw new ProtocolError("corrupt", "file does not match the offered SHA-256");
    return blob;
  }
}
