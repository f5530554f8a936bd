// File offers and chunk frames (docs/protocol.md 5.2), as peer/files.py.
// A chunk frame is u64be(offset) || SHA-256(data) || data.

import { ProtocolError, concat, fromHex, hex, readU64be, u64be } from "./bytes.js";
import { sha256 } from "./crypto.js";
import { showsInline } from "./imagesize.js";
import { TokenBucket } from "./mesh.js";

export const CHUNK_HEADER = 40;
export const DEFAULT_CHUNK = 64 * 1024;
export const MAX_CHUNK = 256 * 1024;
const ID = /^[0-9a-f]{32}$/;
const MIME = /^[\w.+-]+\/[\w.+-]+$/;
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
  if (size === 0 && digest.toLowerCase() !== EMPTY_SHA256) throw new ProtocolError("malformed", "an empty file's sha256 is that of no bytes");
  if (data.earlier !== undefined && typeof data.earlier !== "boolean") throw new ProtocolError("malformed", "earlier is true or false");
  return { id, name, size, mime, sha256: digest, chunk };
}

export function parseOfferFrame(data, maxSize) {
  // A file-offer frame: the offer, and whether it was made before we came.
  const offer = parseOffer(data, maxSize);
  return { offer, earlier: data.earlier === true };
}

export function offerFrame(offer, earlier = false) {
  // `earlier` for a member who was not here when the file was offered.
  const { id, name, size, mime, sha256: digest, chunk } = offer;
  const frame = { t: "file-offer", id, name, size, mime, sha256: digest, chunk };
  if (earlier) frame.earlier = true;
  return frame;
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
    // The whole file as a Blob, once its SHA-256 matches the offer's. Typed as the offer
    // says only if it is an image shown inline: a Blob's URL is of the page's origin, and
    // one the sender typed text/html (or image/svg+xml) would open, from a click on its
    // link in a new tab, as a document of the page's own; any other type downloads. An
    // image whose header says more pixels than MAX_INLINE_PIXELS (or says none) is not
    // shown either: decoding it unasked could take a gigabyte and freeze the page.
    const bytes = new Uint8Array(await new Blob(this.parts).arrayBuffer());
    const digest = hex(await sha256(bytes));
    if (digest !== this.offer.sha256) throw new ProtocolError("corrupt", "file does not match the offered SHA-256");
    const inline = INLINE_IMAGE_TYPES.includes(this.offer.mime.toLowerCase()) && showsInline(bytes);
    return new Blob([bytes], { type: inline ? this.offer.mime : "application/octet-stream" });
  }
}

// --- what a receiver keeps (as OfferLimits and OfferBook in peer/files.py) ---

export const OFFER_LIMITS = Object.freeze({
  perMember: 32, // offers kept, not yet accepted, per member
  perRoom: 256, // ... and in the whole room
  rate: 1.0, // new offers per second per member (a token bucket) ...
  burst: 32, // ... with a burst of a member's whole allowance (re-offers on connection)
  maxAge: 3600, // seconds an offer is kept without being accepted
  downloadsPerMember: 4, // downloads an accept policy runs at once per member ...
  downloadsPerRoom: 8, // ... and in the room; the other offers wait (and age)
  stall: 120, // seconds a download may go without a verified chunk before it fails
  settled: 1024, // ids of finished and declined files remembered (re-offers ignored)
  members: 1024, // members' rate buckets kept (full ones are forgotten beyond this)
});

export class OfferBook {
  // The offers a receiver keeps until a person or an accept policy takes them. No
  // I/O: the caller passes `now`. An offer over a bound is a counted drop, never an
  // exception. Offers stay in arrival order: the oldest go first, to the policy and by age.
  constructor(limits = OFFER_LIMITS) {
    this.limits = limits;
    this.counters = {};
    this.kept = new Map(); // id -> {member, offer, since}
    this.perMember = new Map();
    this.buckets = new Map();
    this.settled = new Set(); // insertion-ordered: the oldest go first
  }

  get size() {
    return this.kept.size;
  }

  has(id) {
    return this.kept.has(id);
  }

  get(id) {
    const kept = this.kept.get(id);
    return kept ? { sender: kept.member, offer: kept.offer } : undefined;
  }

  earlier(id) {
    // Whether the kept offer was made before we came.
    return this.kept.get(id)?.earlier ?? false;
  }

  known(id) {
    // Kept, or finished or declined not long ago: a re-offer changes nothing.
    return this.kept.has(id) || this.settled.has(id);
  }

  admit(member, now) {
    // Take one of the member's tokens for a new offer; false (counted) when it has none.
    const { rate, burst, members } = this.limits;
    let bucket = this.buckets.get(member);
    if (!bucket) {
      if (this.buckets.size >= members) this.forgetFullBuckets(now);
      if (this.buckets.size >= members) return this.drop("drop.offer_members");
      bucket = new TokenBucket(rate, burst, now);
      this.buckets.set(member, bucket);
    }
    return bucket.take(now) || this.drop("drop.offer_rate");
  }

  add(member, offer, now, earlier = false) {
    // Keep an admitted offer; false (counted) over the member's or the room's count.
    if (this.known(offer.id)) return false;
    if ((this.perMember.get(member) ?? 0) >= this.limits.perMember) return this.drop("drop.offer_member_full");
    if (this.kept.size >= this.limits.perRoom) return this.drop("drop.offer_room_full");
    this.kept.set(offer.id, { member, offer, since: now, earlier });
    this.perMember.set(member, (this.perMember.get(member) ?? 0) + 1);
    return true;
  }

  take(id) {
    // Remove an offer (accepted or declined); undefined if it is not kept.
    const kept = this.kept.get(id);
    if (!kept) return undefined;
    this.kept.delete(id);
    const left = this.perMember.get(kept.member) - 1;
    if (left) this.perMember.set(kept.member, left);
    else this.perMember.delete(kept.member);
    return { sender: kept.member, offer: kept.offer };
  }

  settle(id) {
    // Remember a finished or declined file, so that its re-offers are ignored.
    this.settled.delete(id);
    this.settled.add(id);
    while (this.settled.size > this.limits.settled) this.settled.delete(this.settled.values().next().value);
  }

  forgetMember(member) {
    const gone = [...this.kept].filter(([, kept]) => kept.member === member).map(([id]) => id);
    for (const id of gone) this.take(id);
    this.buckets.delete(member);
    return gone;
  }

  expire(now) {
    // Forget offers older than maxAge (counted); returns the ids forgotten.
    const oldest = now - this.limits.maxAge;
    const gone = [...this.kept].filter(([, kept]) => kept.since <= oldest).map(([id]) => id);
    for (const id of gone) {
      this.take(id);
      this.count("expired.offer");
    }
    if (this.buckets.size > this.limits.perRoom) this.forgetFullBuckets(now);
    return gone;
  }

  nextExpiry() {
    if (!this.kept.size) return null;
    let first = Infinity;
    for (const kept of this.kept.values()) first = Math.min(first, kept.since);
    return first + this.limits.maxAge;
  }

  nextAcceptable(busy, eligible = () => true) {
    // The oldest offer an accept policy may take now, given the downloads running per
    // member (`busy`, a Map) and what it takes (`eligible(offer, earlier)`); null when the
    // room's or every waiting member's slots are full.
    let running = 0;
    for (const n of busy.values()) running += n;
    if (running >= this.limits.downloadsPerRoom) return null;
    for (const [id, kept] of this.kept) {
      if ((busy.get(kept.member) ?? 0) < this.limits.downloadsPerMember && eligible(kept.offer, kept.earlier)) return id;
    }
    return null;
  }

  forgetFullBuckets(now) {
    // A full bucket is what a new member gets: forgetting it changes nothing.
    for (const [member, bucket] of this.buckets) {
      if (bucket.full(now)) this.buckets.delete(member);
    }
  }

  drop(name) {
    this.count(name);
    return false;
  }

  count(name) {
    this.counters[name] = (this.counters[name] ?? 0) + 1;
  }
}

// --- which offers an accept policy takes (as AcceptRule in peer/files.py) ---

// Images a browser shows inline as they are (no SVG: it is a document, not a picture).
export const INLINE_IMAGE_TYPES = Object.freeze(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"]);
export const INLINE_IMAGE_BYTES = 2 * 1024 * 1024; // the largest image taken unasked

// The browser's policy: the small images it shows inline, shared after it came.
// maxBytes null: any size; earlier: also files shared before we came.
export const BROWSER_ACCEPT = Object.freeze({ maxBytes: INLINE_IMAGE_BYTES, inlineImagesOnly: true, earlier: false });

export function acceptRuleTakes(rule, offer, earlier) {
  // Whether an accept policy with `rule` takes the offer unasked.
  if (earlier && !rule.earlier) return false;
  if (rule.maxBytes !== null && offer.size > rule.maxBytes) return false;
  return !rule.inlineImagesOnly || INLINE_IMAGE_TYPES.includes(offer.mime.toLowerCase());
}

// --- what a sender offers (as SharedFiles in peer/files.py) ---

export class SharedFiles {
  // The files a sender offers, and to whom each is new. No I/O: the caller passes `now`.
  // A sender offers its perMember newest files, each for maxAge seconds (no receiver
  // keeps more of one member's offers, or longer). A member present when a file is
  // offered hears of it as new; one who comes later hears of it as shared earlier. A
  // file meant for some members only (`audience`) is offered, and served, to them alone.
  // Recipient sets are bounded by `members`.
  constructor(limits = OFFER_LIMITS) {
    this.limits = limits;
    this.shared = new Map(); // id -> {offer, since, fresh: Set, audience: Set | null}, oldest first
  }

  get size() {
    return this.shared.size;
  }

  has(id) {
    return this.shared.has(id);
  }

  add(offer, now, present, audience = null) {
    // Offer a file, new to the `present` members (of `audience`, if given); returns the
    // ids of the oldest files no longer offered because of it.
    const bound = this.limits.members;
    const chosen = audience === null ? null : new Set([...audience].slice(0, bound));
    const fresh = new Set([...present].slice(0, bound).filter((m) => chosen === null || chosen.has(m)));
    this.shared.delete(offer.id);
    this.shared.set(offer.id, { offer, since: now, fresh, audience: chosen });
    const gone = [];
    while (this.shared.size > this.limits.perMember) {
      const oldest = this.shared.keys().next().value;
      gone.push(oldest);
      this.shared.delete(oldest);
    }
    return gone;
  }

  address(id, members) {
    // Offer a file to more members, as new to them; returns the members added.
    const shared = this.shared.get(id);
    if (!shared) return [];
    const added = [];
    for (const member of members) {
      if (shared.fresh.has(member) || shared.fresh.size >= this.limits.members) continue;
      if (shared.audience !== null) {
        if (shared.audience.size >= this.limits.members) continue;
        shared.audience.add(member);
      }
      shared.fresh.add(member);
      added.push(member);
    }
    return added;
  }

  get(id, now) {
    // The file, while it is offered (not yet past its age); null otherwise.
    const shared = this.shared.get(id);
    return shared && now < shared.since + this.limits.maxAge ? shared.offer : null;
  }

  serves(id, member, now) {
    // Whether `member` may fetch the file: offered, not too old, and meant for it.
    const shared = this.shared.get(id);
    return this.get(id, now) !== null && (shared.audience === null || shared.audience.has(member));
  }

  earlier(id, member) {
    const shared = this.shared.get(id);
    return shared !== undefined && !shared.fresh.has(member);
  }

  forMember(member, now) {
    // What to offer a member whose link (re)opened: every file still offered and meant
    // for it, oldest first, each with whether it was shared before it came.
    const found = [];
    for (const [id, shared] of this.shared) {
      if (this.serves(id, member, now)) found.push({ offer: shared.offer, earlier: !shared.fresh.has(member) });
    }
    return found;
  }

  expire(now) {
    // Stop offering files past their age; returns their ids.
    const oldest = now - this.limits.maxAge;
    const gone = [...this.shared].filter(([, shared]) => shared.since <= oldest).map(([id]) => id);
    for (const id of gone) this.shared.delete(id);
    return gone;
  }

  nextExpiry() {
    if (!this.shared.size) return null;
    return this.shared.values().next().value.since + this.limits.maxAge;
  }
}

// --- what a member's accepts may make a sender upload (as UploadLimits and UploadBook) ---

export const UPLOAD_LIMITS = Object.freeze({
  perMember: 2, // uploads running at once to one member ...
  perRoom: 8, // ... and in the whole room; the other accepts wait their turn
  waitingPerMember: 32, // accepts waiting per member (one per file: a sender keeps 32 offers) ...
  waitingPerRoom: 256, // ... and in the room; past these an accept is dropped (counted)
  rate: 1.0, // accepts per second per member (a token bucket) ...
  burst: 32, // ... with a burst of one per file a sender keeps (re-sent on each reconnection)
  stall: 120, // seconds an upload may go without its channel taking data before it is stopped
  waitNotice: 30, // seconds between file-wait notices to a waiting receiver
  bufferedPerMember: 8 * 1024 * 1024, // bytes buffered in one member's upload channels (closing ones too) ...
  bufferedPerRoom: 32 * 1024 * 1024, // ... and in all of the room's, before uploads pause
  members: 1024, // members' rate buckets kept (full ones are forgotten beyond this)
});

// Commands (what the glue does), the same names and fields as in peer/files.py.
const StartUpload = (serial, member, id) => ({ type: "start-upload", serial, member, id }); // open file:<id>; `begin` gives the offset
const StopUpload = (serial, member, id) => ({ type: "stop-upload", serial, member, id }); // close its channel, end its stream
const WaitNotice = (member, id) => ({ type: "wait-notice", member, id }); // send file-wait

const keyOf = (member, id) => `${member} ${id}`;

export class UploadBook {
  // A sender's uploads: at most one per (member, file), a few at once, the rest waiting.
  // No I/O: the caller passes `now`, feeds accept (a member's file-accept), begin (an
  // upload's channel opened), progress (it took data) and ended (its stream ended or its
  // channel closed), and carries out the commands (nextCommand). A new accept of a file
  // already streaming to that member replaces that stream, from the new offset (a receiver
  // asks again after a bad chunk or a reconnection: its latest word wins); before the
  // stream's channel has opened, nothing was sent on it and the new offset is simply taken.
  // Over a bound an accept is a counted drop, never an exception.
  constructor(limits = UPLOAD_LIMITS, counters = {}) {
    this.limits = limits;
    this.counters = counters;
    this.running = new Map(); // serial -> {member, id, offset, activeAt, begun}
    this.waiting = new Map(); // "member id" -> {member, id, offset, noticedAt}, oldest first
    this.serials = new Map(); // "member id" -> serial
    this.nextSerial = 1;
    this.buckets = new Map();
    this.commands = [];
  }

  accept(member, id, offset, now) {
    // A member asks for a file we offer, from `offset` (the caller checked both).
    if (!this.admit(member, now)) return;
    const key = keyOf(member, id);
    const serial = this.serials.get(key);
    if (serial !== undefined && !this.running.get(serial).begun) this.running.get(serial).offset = offset;
    else if (serial !== undefined) {
      // the receiver's latest word wins, in the same slot
      this.commands.push(StopUpload(serial, member, id));
      this.start(member, id, offset, now, serial);
    } else if (this.waiting.has(key)) this.waiting.get(key).offset = offset;
    else if (this.free(member)) this.start(member, id, offset, now);
    else if (
      [...this.waiting.values()].filter((w) => w.member === member).length >= this.limits.waitingPerMember ||
      this.waiting.size >= this.limits.waitingPerRoom
    ) {
      this.count("drop.accept_queue_full");
    } else {
      this.waiting.set(key, { member, id, offset, noticedAt: now });
      this.commands.push(WaitNotice(member, id));
    }
  }

  begin(serial, now) {
    // The upload's channel opened: the offset to stream from (null: not running).
    const running = this.running.get(serial);
    if (!running) return null;
    running.begun = true;
    running.activeAt = now;
    return running.offset;
  }

  progress(serial, now) {
    const running = this.running.get(serial);
    if (running) running.activeAt = now;
  }

  ended(serial, now) {
    // The upload's stream ended or its channel closed: its slot goes to one waiting.
    const running = this.running.get(serial);
    if (!running) return;
    this.running.delete(serial);
    this.serials.delete(keyOf(running.member, running.id));
    this.fill(now);
  }

  forgetMember(member, now) {
    // A member left: its uploads stop, its waiting accepts and its bucket go.
    for (const [key, waiting] of [...this.waiting]) if (waiting.member === member) this.waiting.delete(key);
    for (const [serial, running] of [...this.running]) if (running.member === member) this.stop(serial);
    this.buckets.delete(member);
    this.fill(now);
  }

  handleTimer(now) {
    // Stop uploads that stalled; remind waiting receivers that they wait.
    for (const [serial, running] of [...this.running]) {
      if (now - running.activeAt >= this.limits.stall) {
        this.count("failed.upload_stalled");
        this.stop(serial);
      }
    }
    this.fill(now); // before the notices: one about to start needs none
    for (const waiting of this.waiting.values()) {
      if (now - waiting.noticedAt >= this.limits.waitNotice) {
        waiting.noticedAt = now;
        this.commands.push(WaitNotice(waiting.member, waiting.id));
      }
    }
    if (this.buckets.size > this.limits.perRoom) this.forgetFullBuckets(now);
  }

  getTimer() {
    // When handleTimer next has something to do (null: nothing running or waiting).
    let deadline = Infinity;
    for (const { activeAt } of this.running.values()) deadline = Math.min(deadline, activeAt + this.limits.stall);
    for (const { noticedAt } of this.waiting.values()) deadline = Math.min(deadline, noticedAt + this.limits.waitNotice);
    return deadline === Infinity ? null : deadline;
  }

  nextCommand() {
    return this.commands.shift() ?? null;
  }

  admit(member, now) {
    let bucket = this.buckets.get(member);
    if (!bucket) {
      if (this.buckets.size >= this.limits.members) this.forgetFullBuckets(now);
      if (this.buckets.size >= this.limits.members) return this.drop("drop.accept_members");
      bucket = new TokenBucket(this.limits.rate, this.limits.burst, now);
      this.buckets.set(member, bucket);
    }
    return bucket.take(now) || this.drop("drop.accept_rate");
  }

  free(member) {
    let mine = 0;
    for (const running of this.running.values()) if (running.member === member) mine += 1;
    return this.running.size < this.limits.perRoom && mine < this.limits.perMember;
  }

  start(member, id, offset, now, replacing = null) {
    if (replacing !== null) this.running.delete(replacing);
    const serial = this.nextSerial++;
    this.running.set(serial, { member, id, offset, activeAt: now, begun: false });
    this.serials.set(keyOf(member, id), serial);
    this.commands.push(StartUpload(serial, member, id));
  }

  stop(serial) {
    const running = this.running.get(serial);
    this.running.delete(serial);
    this.serials.delete(keyOf(running.member, running.id));
    this.commands.push(StopUpload(serial, running.member, running.id));
  }

  fill(now) {
    // Give free slots to waiting accepts: a member with the fewest uploads running first
    // (one member's many accepts do not starve the others), the oldest of those.
    while (this.waiting.size && this.running.size < this.limits.perRoom) {
      const busy = new Map();
      for (const { member } of this.running.values()) busy.set(member, (busy.get(member) ?? 0) + 1);
      let best = null;
      for (const [key, waiting] of this.waiting) {
        const mine = busy.get(waiting.member) ?? 0;
        if (mine < this.limits.perMember && (best === null || mine < (busy.get(best[1].member) ?? 0))) best = [key, waiting];
      }
      if (best === null) return;
      this.waiting.delete(best[0]);
      this.start(best[1].member, best[1].id, best[1].offset, now);
    }
  }

  forgetFullBuckets(now) {
    for (const [member, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(member);
  }

  drop(name) {
    this.count(name);
    return false;
  }

  count(name) {
    this.counters[name] = (this.counters[name] ?? 0) + 1;
  }
}
