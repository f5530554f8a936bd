// Reliable room messaging, the browser's port of peer/messaging.py
// (docs/protocol.md 5.0.1). No I/O: the caller feeds frames (whose envelope
// signatures it has already checked), connection changes and the time, and
// takes out frames per member, events, and the next timer.
//
// Each author numbers its messages 1, 2, ...; receivers deliver each author's
// messages exactly once and in seq order, acknowledge cumulatively, and a
// Lamport clock gives the one display order (lamport, author, seq) that every
// member converges to. The clock is hybrid, anchored to wall time in ms: an
// envelope more than maxClockLead ahead of our wall clock is refused, and our
// clock adopts what it receives only up to half of that ahead, so nobody can
// push a member's clock out of reach of the others.
//
// Nothing a member sends grows this state without bound or makes it answer
// without bound: authors tracked, early envelopes in all, history kept, the
// `since` map, history answers (bytes and rate) are capped, and what goes past
// a cap is counted, never thrown. Each author's new envelopes pass a rate limit
// (docs/protocol.md 5.4): one over it is dropped unacknowledged and reported
// (`flooding`); a blocked key's envelopes are kept and forwarded, never
// delivered. An envelope the glue could not send (its
// link's queue was full) is sent again on the same link: unacknowledged
// envelopes go again every resendInterval in which the member acknowledged
// nothing new. Every number here is RoomConfig's in peer/messaging.py.
//
// What an envelope says is read from its kind and body (docs/protocol.md 5.0.1,
// "What an envelope says"): `text`, `chat` (text, a signed display name, the
// message it replies to) and `reaction` (an emoji on or off a message). A
// field that breaks its bound is counted and left out, never a reason to
// withhold the envelope: a gap would hold back all its author says next.

import { ProtocolError, tooDeep, utf8 } from "./bytes.js";

export const MESSAGE_CONTEXT = "pagemesh-msg/1\0";

export const DEFAULTS = {
  maxBodyBytes: 16384,
  maxUnacked: 1000,
  maxOutbox: 10000,
  maxEarly: 1000, // out-of-order envelopes per author
  maxEarlyTotal: 2000, // ... and across all authors (any key signs: authors are free)
  maxAuthors: 1024, // delivery state kept; past it the least recently delivered goes
  historyCount: 200,
  historyAge: 3600,
  historyFrameBytes: 65536, // a hist frame, unless it carries one envelope (wireSize)
  historyAnswerBytes: 524288, // envelope bytes in one history answer
  histReqInterval: 10, // a hist-req: once per connection, then once per this many seconds
  maxSince: 256, // authors in a hist-req
  resendInterval: 2, // unacknowledged envelopes go again after this long without an ack
  resendBurst: 200, // ... at most this many each time
  resumeWindow: 30,
  ackDelay: 0.02,
  maxHistory: 5000,
  maxClockLead: 3600, // seconds; see ReliableRoom.clockBounds
  maxNames: 1024, // authors whose latest signed name is kept; the least recently named goes
  // Per author, token buckets of envelopes and body bytes (docs/protocol.md 5.4): a new
  // envelope that finds one empty is dropped unacknowledged and reported (`flooding`).
  floodMessages: 200,
  floodRate: 4,
  floodBytes: 524288,
  floodByteRate: 65536,
  floodReportInterval: 10, // first drop reported at once, then at most once per this long
};

export class TokenBucket {
  // Two token buckets on one clock, envelopes and bytes: TokenBucket in
  // peer/messaging.py, the same double arithmetic in the same order.
  constructor(messages, octets, at) {
    this.messages = messages;
    this.octets = octets;
    this.at = at;
  }

  take(size, now, config) {
    const elapsed = now - this.at;
    if (elapsed > 0) {
      this.messages = Math.min(config.floodMessages, this.messages + elapsed * config.floodRate);
      this.octets = Math.min(config.floodBytes, this.octets + elapsed * config.floodByteRate);
      this.at = now;
    }
    if (this.messages < 1 || this.octets < size) return false;
    this.messages -= 1;
    this.octets -= size;
    return true;
  }
}

export const MAX_NUMBER = Number.MAX_SAFE_INTEGER; // the largest seq, lamport and ts on the wire

const millis = (now) => Math.floor(now * 1000); // the clock's unit (and ts's)

export function signedBytes(env) {
  const fields = [env.room, env.author, env.seq, env.lamport, env.ts, env.kind, env.body];
  return utf8(MESSAGE_CONTEXT + JSON.stringify(fields));
}

const isCount = (n) => Number.isSafeInteger(n) && n >= 0;
const HEX = /^[0-9a-f]*$/;

export function parseEnvelope(data, maxBody = DEFAULTS.maxBodyBytes) {
  // The wire form of an envelope, checked for shape (not signature).
  if (typeof data !== "object" || data === null) throw new ProtocolError("malformed", "not an envelope");
  const { room, author, seq, lamport, ts, kind, body, sig } = data;
  for (const [value, size] of [[room, 20], [author, 32], [sig, 64]]) {
    if (typeof value !== "string" || value.length !== 2 * size || !HEX.test(value)) {
      throw new ProtocolError("malformed", "envelope field of the wrong size");
    }
  }
  if (![seq, lamport, ts].every(isCount) || seq < 1) {
    throw new ProtocolError("malformed", "envelope numbers out of range");
  }
  if (typeof kind !== "string" || typeof body !== "string" || kind.length > 32) {
    throw new ProtocolError("malformed", "envelope kind and body are strings");
  }
  if (utf8(body).length > maxBody) throw new ProtocolError("too-large", "envelope body too large");
  return { room, author, seq, lamport, ts, kind, body, sig };
}

// The total order: lamport, then author, then seq.
export const order = (a, b) =>
  a.lamport - b.lamport || (a.author < b.author ? -1 : a.author > b.author ? 1 : 0) || a.seq - b.seq;

function asciiJsonLength(text) {
  // Characters of a JSON string's contents as Python's json.dumps writes it (ASCII).
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 || c === 0x5c || c === 8 || c === 9 || c === 10 || c === 12 || c === 13) n += 2;
    else if (c < 0x20 || c > 0x7e) n += 6;
    else n += 1;
  }
  return n;
}

const ENVELOPE_FRAME = '{"room":"","author":"","seq":,"lamport":,"ts":,"kind":"","body":"","sig":""}'.length;
const HIST_FRAME_OVERHEAD = '{"t":"hist","envs":[]}'.length;
const LOWER_HEX_KEY = /^[0-9a-f]{64}$/;

export function wireSize(env) {
  // Characters of an envelope in a frame as the Python glue sends it (compact, ASCII
  // JSON): an upper bound of its bytes and characters from either client.
  const numbers = [env.seq, env.lamport, env.ts].reduce((n, x) => n + String(x).length, 0);
  const text = asciiJsonLength(env.kind) + asciiJsonLength(env.body);
  return ENVELOPE_FRAME + env.room.length + env.author.length + env.sig.length + numbers + text;
}

export class MessagingError extends Error {}

// --- what an envelope says (peer/messaging.py's twin) ---

export const MAX_NAME_BYTES = 64; // a display name: 1 to 64 UTF-8 bytes once in NFC
export const MAX_EMOJI = 16; // a reaction: 1 to 16 code points
export const MAX_BODY_DEPTH = 8; // nested arrays and objects in a JSON body, scanned first
// Control characters, line separators and bidi controls: none in a name or an emoji.
const LABEL_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/;
const SURROGATE = /[\uD800-\uDFFF]/u; // with the u flag, only a lone one matches

class Defect extends Error {} // a field of a body that breaks its bound; message: the counter

const has = (obj, key) => Object.hasOwn(obj, key);
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

function readName(value) {
  // A display name in NFC, or a Defect.
  if (typeof value !== "string" || SURROGATE.test(value) || LABEL_FORBIDDEN.test(value)) {
    throw new Defect("drop.bad_name");
  }
  const name = value.normalize("NFC");
  const size = utf8(name).length;
  if (size < 1 || size > MAX_NAME_BYTES) throw new Defect("drop.bad_name");
  return name;
}

function readEmoji(value) {
  // A reaction, exactly as signed (not normalized), or a Defect.
  if (typeof value !== "string" || SURROGATE.test(value) || LABEL_FORBIDDEN.test(value)) {
    throw new Defect("drop.bad_emoji");
  }
  const points = [...value].length;
  if (points < 1 || points > MAX_EMOJI) throw new Defect("drop.bad_emoji");
  return value;
}

function readReference(value) {
  // {"author": 64 lower-case hex, "seq": 1..2^53-1}, or a Defect.
  if (!isObject(value)) throw new Defect("drop.bad_reference");
  const author = has(value, "author") ? value.author : undefined;
  const seq = has(value, "seq") ? value.seq : undefined;
  if (typeof author !== "string" || !LOWER_HEX_KEY.test(author)) throw new Defect("drop.bad_reference");
  if (!Number.isSafeInteger(seq) || seq < 1) throw new Defect("drop.bad_reference");
  return { author, seq };
}

function readText(value) {
  if (typeof value !== "string" || SURROGATE.test(value)) throw new Defect("drop.bad_text");
  return value;
}

function optional(read, obj, key, defects) {
  // An optional field: absent is null, and so is a defective one (counted).
  if (!has(obj, key)) return null;
  try {
    return read(obj[key]);
  } catch (error) {
    if (!(error instanceof Defect)) throw error;
    defects.push(error.message);
    return null;
  }
}


function jsonBody(body) {
  // A body that is one JSON object, or a Defect.
  if (tooDeep(body, MAX_BODY_DEPTH)) throw new Defect("drop.bad_body");
  let obj;
  try {
    obj = JSON.parse(body);
  } catch {
    throw new Defect("drop.bad_body");
  }
  if (!isObject(obj)) throw new Defect("drop.bad_body");
  return obj;
}

const field = (obj, key) => (has(obj, key) ? obj[key] : undefined);

// The kinds read here; an envelope of any other kind is delivered with no content.
export const CONTENT_KINDS = {
  text: (body) => ({ type: "chat", text: body, name: null, replyTo: null }),
  chat: (body, defects) => {
    const obj = jsonBody(body);
    const text = readText(field(obj, "text"));
    const name = optional(readName, obj, "name", defects);
    return { type: "chat", text, name, replyTo: optional(readReference, obj, "re", defects) };
  },
  reaction: (body, defects) => {
    const obj = jsonBody(body);
    const target = readReference(field(obj, "re"));
    const emoji = readEmoji(field(obj, "emoji"));
    const on = field(obj, "on");
    if (typeof on !== "boolean") throw new Defect("drop.bad_reaction");
    return { type: "reaction", target, emoji, on, name: optional(readName, obj, "name", defects) };
  },
};

export function parseContent(kind, body) {
  // [what an envelope of `kind` with `body` says (or null), the defects of its fields]. A
  // defective optional field (a name, a reply's reference) is left out; a defective
  // required one leaves no content. Never throws.
  if (!Object.hasOwn(CONTENT_KINDS, kind)) return [null, []];
  const defects = [];
  try {
    return [CONTENT_KINDS[kind](body, defects), defects];
  } catch (error) {
    if (!(error instanceof Defect)) throw error;
    return [null, [...defects, error.message]];
  }
}

export const readContent = (env) => parseContent(env.kind, env.body)[0];

export function checkName(name) {
  // `name` as it is sent (NFC); a MessagingError unless it is a valid display name.
  try {
    return readName(name);
  } catch {
    throw new MessagingError(`a name is 1 to ${MAX_NAME_BYTES} UTF-8 bytes, without control characters`);
  }
}

function referenceJson(ref) {
  // A message a sender names: {author: 64 lower-case hex, seq}, or a MessagingError.
  const good = typeof ref?.author === "string" && LOWER_HEX_KEY.test(ref.author);
  if (!good || !Number.isSafeInteger(ref.seq) || ref.seq < 1) {
    throw new MessagingError("a message is named by its author's key and a seq from 1");
  }
  return { author: ref.author, seq: ref.seq };
}

export function chatBody(text, { name = null, replyTo = null } = {}) {
  // The body of a `chat` envelope (the same bytes Python's chat_body makes).
  if (typeof text !== "string" || SURROGATE.test(text)) throw new MessagingError("the text has a lone surrogate");
  const fields = { text };
  if (name !== null) fields.name = checkName(name);
  if (replyTo !== null) fields.re = referenceJson(replyTo);
  return JSON.stringify(fields);
}

export function reactionBody(target, emoji, { on = true, name = null } = {}) {
  // The body of a `reaction` envelope (the same bytes Python's reaction_body makes).
  const re = referenceJson(target);
  try {
    readEmoji(emoji);
  } catch {
    throw new MessagingError(`a reaction is 1 to ${MAX_EMOJI} code points, without control characters`);
  }
  const fields = { re, emoji, on };
  if (name !== null) fields.name = checkName(name);
  return JSON.stringify(fields);
}

export const refKey = (ref) => `${ref.author}:${ref.seq}`;

export function reactionsFor(history) {
  // Who reacts with what to each message: Map refKey -> Map emoji -> Set of authors whose
  // latest reaction with it (in total order) is on. A pure fold over `history`.
  const folded = new Map();
  for (const env of history.filter((e) => e.kind === "reaction").sort(order)) {
    const reaction = readContent(env);
    if (reaction === null) continue;
    const target = refKey(reaction.target);
    if (!folded.has(target)) folded.set(target, new Map());
    const byEmoji = folded.get(target);
    if (!byEmoji.has(reaction.emoji)) byEmoji.set(reaction.emoji, new Set());
    const who = byEmoji.get(reaction.emoji);
    if (reaction.on) who.add(env.author);
    else who.delete(env.author);
    if (!who.size) byEmoji.delete(reaction.emoji);
    if (!byEmoji.size) folded.delete(target);
  }
  return folded;
}

// Tell apart two members who gave themselves one name: the key's first four hex
// digits ("·3fa9"), and a hue from its next two bytes. The same in Python.
export const shortTag = (keyHex) => `\u00b7${keyHex.slice(0, 4)}`;
export const keyHue = (keyHex) => parseInt(keyHex.slice(4, 8), 16) % 360;
export const keyColour = (keyHex) => `hsl(${keyHue(keyHex)} 65% 40%)`;

// An author's delivery state; `bucket` (its rate limit) is made with its first
// envelope that needs one.
const newState = (delivered) => ({
  delivered,
  early: new Map(),
  gapSince: null,
  bucket: null,
  floodDropped: 0, // envelopes dropped for rate since it was last reported
  floodReported: null,
});

export class ReliableRoom {
  constructor(room, key, config = {}, state = {}, now = null, blocked = []) {
    // `room` and `key` are hex; `state` restores seq, lamport, delivered and history
    // (delivered in order of activity, least recent first: past maxAuthors the first
    // ones are forgotten). Given `now`, the restored clock is repaired as if the history
    // were received now (docs/protocol.md 5.0.1): envelopes beyond the clock lead are
    // left out (listed in refusedOnRestore; our own are not re-sent, every member would
    // refuse them), and the clock comes down to what the kept ones and the adoption
    // bound allow.
    this.room = room;
    this.key = key;
    this.config = { ...DEFAULTS, ...config };
    this.seq = state.seq ?? 0;
    this.base = this.seq; // our seqs above this were numbered here, not restored or proven elsewhere
    this.lamport = state.lamport ?? 0;
    let kept = state.history ?? [];
    this.refusedOnRestore = [];
    if (now !== null) {
      const [refuseAbove, adoptUpTo] = this.clockBounds(now);
      this.refusedOnRestore = kept.filter((env) => env.lamport > refuseAbove);
      kept = kept.filter((env) => env.lamport <= refuseAbove);
      const clocks = [this.lamport, ...kept.map((env) => env.lamport)];
      this.lamport = Math.max(...clocks.map((c) => Math.min(c, adoptUpTo)));
    }
    this.counters = {};
    this.connectedMembers = new Set();
    // Keys whose envelopes are kept and forwarded but never delivered or shown, and who
    // get no link (docs/protocol.md 5.4).
    this.blockedKeys = new Set([...blocked].filter((k) => k !== key));
    // In order of activity: the least recently delivered author first.
    this.authors = new Map(
      Object.entries(state.delivered ?? {}).map(([a, n]) => [a, newState(n)]),
    );
    this.authors.set(this.key, newState(this.seq));
    this.earlyTotal = 0;
    this.ackDue = new Map();
    while (this.authors.size > this.config.maxAuthors && this.forgetAnAuthor());
    this.outbox = new Map(); // our own envelopes by seq, in seq order
    this.acked = new Map(); // per member: the highest of our seqs it acknowledged
    this.retryAt = new Map(); // per connected member with envelopes unacknowledged
    this.histAnswered = new Map(); // per member: its last history request answered
    this.history = new Map(); // `${author}:${seq}` -> envelope
    this.ordered = []; // the same envelopes in total order, kept sorted
    this.frames = [];
    this.events = [];
    // Per author, the latest name (by total order) and its envelope; least recently named first.
    this.named = new Map();
    for (const env of kept) {
      this.remember(env);
      this.learnName(env, parseContent(env.kind, env.body)[0]); // not counted: nobody sent it now
    }
    const own = kept.filter((env) => env.author === this.key).sort((a, b) => a.seq - b.seq);
    for (const env of own) this.outbox.set(env.seq, env);
  }

  get trackedAuthors() {
    return this.authors.size;
  }

  // --- the application's side ---

  reserve(body, now, kind = "text", replaces = null) {
    // Number the next message; the caller signs it and hands it to commit(). `replaces`
    // names the seq of ours it says again (a `reissue`), past the unacknowledged bound.
    if (utf8(body).length > this.config.maxBodyBytes) {
      throw new MessagingError(`a message is at most ${this.config.maxBodyBytes} bytes`);
    }
    for (const member of this.connectedMembers) {
      if (replaces === null && this.seq - (this.acked.get(member) ?? 0) >= this.config.maxUnacked) {
        throw new MessagingError("too many messages not yet acknowledged; wait");
      }
    }
    // A hybrid logical clock: one past everything seen, and never behind wall time.
    const lamport = Math.max(this.lamport + 1, millis(now));
    if (!(millis(now) >= 0 && millis(now) <= MAX_NUMBER) || Math.max(lamport, this.seq + 1) > MAX_NUMBER) {
      throw new MessagingError("the clock is out of range; is the system time right?");
    }
    this.seq += 1;
    this.lamport = lamport;
    return { room: this.room, author: this.key, seq: this.seq, lamport, ts: millis(now), kind, body };
  }

  reserveChat(text, now, { name = null, replyTo = null } = {}) {
    // A `chat` envelope to sign and commit(): text, our display name, what it replies to.
    return this.reserve(chatBody(text, { name, replyTo }), now, "chat");
  }

  reserveReaction(target, emoji, now, { on = true, name = null } = {}) {
    // A `reaction` envelope to sign and commit(): `emoji` on (or off) `target`.
    return this.reserve(reactionBody(target, emoji, { on, name }), now, "reaction");
  }

  commit(env, now, replaces = null) {
    this.outbox.set(env.seq, env);
    while (this.outbox.size > this.config.maxOutbox) this.outbox.delete(this.outbox.keys().next().value);
    this.authors.get(this.key).delivered = Math.max(this.authors.get(this.key).delivered, env.seq);
    this.remember(env);
    this.events.push({ type: "delivered", env, content: this.read(env), replaces });
    for (const member of this.connectedMembers) {
      this.frames.push([member, { t: "msg", env }]);
      if (!this.retryAt.has(member)) this.retryAt.set(member, now + this.config.resendInterval);
    }
  }

  transcript() {
    // Every message kept, in total order; a blocked author's are left out.
    return this.ordered.filter((env) => !this.blockedKeys.has(env.author));
  }

  envelope(ref) {
    // The message `ref` ({author, seq}) names, if it is kept (what a reply quotes);
    // never a blocked author's.
    if (this.blockedKeys.has(ref.author)) return null;
    return this.history.get(refKey(ref)) ?? null;
  }

  nameOf(author) {
    // The latest name (in total order) `author` signed that we have seen.
    if (this.blockedKeys.has(author)) return null;
    return this.named.get(author)?.name ?? null;
  }

  names() {
    // Every author's latest signed name, at most maxNames of them (none blocked).
    const shown = [...this.named].filter(([author]) => !this.blockedKeys.has(author));
    return new Map(shown.map(([author, { name }]) => [author, name]));
  }

  // --- blocking (docs/protocol.md 5.4) ---

  get blocked() {
    return new Set(this.blockedKeys);
  }

  block(author) {
    // Deliver and show nothing more of `author`'s and drop its link; its envelopes that
    // others forward are still taken, kept and forwarded in history, never delivered.
    // Nothing is sent to say so.
    if (author === this.key) throw new MessagingError("one cannot block oneself");
    this.blockedKeys.add(author);
    if (this.connectedMembers.has(author)) this.disconnected(author);
  }

  unblock(author) {
    // Deliver `author`'s envelopes again from the next one; those kept meanwhile come
    // back in transcript() (not delivered as events again).
    this.blockedKeys.delete(author);
  }

  state() {
    const delivered = {};
    for (const [author, s] of this.authors) delivered[author] = s.delivered;
    const recent = this.transcript().slice(-this.config.historyCount); // none blocked
    return { seq: this.seq, lamport: this.lamport, delivered, history: recent };
  }

  // --- connections ---

  connected(member, now) {
    if (this.blockedKeys.has(member)) {
      this.count("refused.blocked"); // the glue makes no link to it; nor do we
      return;
    }
    this.connectedMembers.add(member);
    this.histAnswered.delete(member); // one answer per connection
    // First, while the link's queue is empty: the one frame never sent again.
    this.frames.push([member, { t: "hist-req", since: this.since() }]);
    if (!this.acked.has(member)) {
      // a member we never heard from gets recent history, not everything we said
      this.acked.set(member, Math.max(0, this.seq - this.config.historyCount));
    }
    for (const env of this.unacked(member, this.seq)) this.frames.push([member, { t: "msg", env }]);
    this.retryAt.delete(member);
    if (this.acked.get(member) < this.seq) this.retryAt.set(member, now + this.config.resendInterval);
  }

  disconnected(member) {
    this.connectedMembers.delete(member);
    this.ackDue.delete(member);
    this.retryAt.delete(member);
    this.histAnswered.delete(member);
  }

  since() {
    // What we have delivered, for the maxSince most recently delivered authors.
    const since = {};
    let count = 0;
    const authors = [...this.authors.keys()];
    for (let i = authors.length - 1; i >= 0 && count < this.config.maxSince; i--) {
      if (authors[i] === this.key) continue;
      since[authors[i]] = this.authors.get(authors[i]).delivered;
      count += 1;
    }
    return since;
  }

  unacked(member, limit) {
    // Our envelopes after the member's ack that the outbox still has, at most `limit`.
    if (this.outbox.size === 0) return [];
    const start = Math.max((this.acked.get(member) ?? 0) + 1, this.outbox.keys().next().value);
    const found = [];
    for (let seq = start; seq <= this.seq && found.length < limit; seq++) {
      const env = this.outbox.get(seq);
      if (env) found.push(env);
    }
    return found;
  }

  // --- input ---

  receive(member, frame, now) {
    // One frame from `member`, envelopes already verified; bad ones are counted.
    if (this.blockedKeys.has(member)) {
      this.count("drop.blocked");
      return;
    }
    try {
      this.receiveFrame(member, frame, now);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.count(`drop.${error.message.replaceAll(" ", "_")}`);
    }
  }

  receiveFrame(member, frame, now) {
    if (typeof frame !== "object" || frame === null) throw new ProtocolError("shape", "not an object");
    if (frame.t === "msg") {
      this.accept(frame.env, now);
    } else if (frame.t === "hist") {
      if (!Array.isArray(frame.envs) || frame.envs.length > this.config.historyCount * 4) {
        throw new ProtocolError("shape", "bad history");
      }
      for (const env of frame.envs) this.accept(env, now);
    } else if (frame.t === "ack") {
      if (!isCount(frame.seq) || frame.seq > this.seq) throw new ProtocolError("shape", "bad ack");
      this.acknowledged(member, frame.seq, now);
    } else if (frame.t === "hist-req") {
      const known = this.parseSince(frame.since);
      const last = this.histAnswered.get(member);
      if (last !== undefined && now < last + this.config.histReqInterval) {
        throw new ProtocolError("rate", "hist req rate");
      }
      this.histAnswered.set(member, now);
      this.answerHistory(member, known, now);
    } else {
      throw new ProtocolError("shape", "unknown frame");
    }
  }

  acknowledged(member, seq, now) {
    if (seq <= (this.acked.get(member) ?? 0)) return;
    this.acked.set(member, seq);
    if (this.retryAt.has(member)) {
      // progress: the link moves, wait a full interval again
      if (seq >= this.seq) this.retryAt.delete(member);
      else this.retryAt.set(member, now + this.config.resendInterval);
    }
  }

  accept(data, now) {
    const env = parseEnvelope(data, this.config.maxBodyBytes);
    if (env.room !== this.room) throw new ProtocolError("shape", "envelope for another room");
    const [refuseAbove, adoptUpTo] = this.clockBounds(now);
    if (env.lamport > refuseAbove) {
      // Not delivered, not adopted, not kept, so never forwarded: a gap of this
      // author's, which a re-send fills or the resume window turns into a
      // discontinuity. Counted per envelope, the rest of a history batch goes on.
      this.count("drop.clock_too_far_ahead");
      return;
    }
    // Adopt at most half the lead ahead of our wall clock: then our next message is
    // within the lead of every member less than half the lead behind us, whatever
    // was signed. Clamped rather than ignored, so a reply still sorts after any
    // message from a clock up to half the lead ahead.
    this.lamport = Math.max(this.lamport, Math.min(env.lamport, adoptUpTo));
    if (env.author === this.key) {
      if (env.seq > this.seq) this.behind(env);
      return; // our own, echoed back
    }
    let state = this.authors.get(env.author);
    if (state === undefined) {
      if (this.history.has(`${env.author}:${env.seq}`)) {
        this.count("duplicate"); // of an author we forgot, still in our history
        return;
      }
      // First word from this author: start at what we got (history fills the rest).
      state = this.newAuthor(env.author, env.seq - 1);
      if (state === null) return;
    }
    // Bounds count per envelope; the rest of a history batch goes on.
    if (env.seq <= state.delivered || state.early.has(env.seq)) {
      this.count("duplicate"); // acknowledged again below: an ack may have been lost
    } else if (!this.withinRate(env, state, now)) {
      return; // not acknowledged: its author sends it again (docs/protocol.md 5.4)
    } else if (env.seq === state.delivered + 1) {
      this.deliver(state, env);
      this.drainEarly(state);
      state.gapSince = state.early.size ? now : null;
    } else if (state.early.size >= this.config.maxEarly) {
      this.count("drop.too_many_early_envelopes");
      return;
    } else if (this.earlyTotal >= this.config.maxEarlyTotal) {
      this.count("drop.early_full");
      return;
    } else {
      state.early.set(env.seq, env);
      this.earlyTotal += 1;
      if (state.gapSince === null) state.gapSince = now;
    }
    if (!this.ackDue.has(env.author)) this.ackDue.set(env.author, now + this.config.ackDelay);
  }

  behind(env) {
    // Our key said env.seq elsewhere (signed: only we could): take up numbering after
    // it, and take back what we numbered here at or below it, to say again.
    this.count("own.behind");
    const stale = [...this.outbox.values()].filter((own) => own.seq > this.base);
    for (const old of stale) {
      this.outbox.delete(old.seq);
      this.forget(old);
    }
    this.seq = this.base = env.seq;
    this.authors.get(this.key).delivered = env.seq;
    this.remember(env);
    this.events.push({ type: "delivered", env, content: this.read(env), replaces: null });
    if (stale.length) this.events.push({ type: "reissue", envs: stale });
  }

  withinRate(env, state, now) {
    // Whether `env`, new from another author, fits that author's rate limit; if not, it
    // is counted and its author reported (docs/protocol.md 5.4).
    const config = this.config;
    if (state.bucket === null) state.bucket = new TokenBucket(config.floodMessages, config.floodBytes, now);
    if (state.bucket.take(utf8(env.body).length, now, config)) return true;
    this.count("drop.flood");
    state.floodDropped += 1;
    const last = state.floodReported;
    if (last === null || now >= last + config.floodReportInterval) {
      this.events.push({ type: "flooding", author: env.author, dropped: state.floodDropped });
      state.floodDropped = 0;
      state.floodReported = now;
    }
    return false;
  }

  newAuthor(author, delivered) {
    // Track a new author, forgetting the least recently active one if full.
    if (this.authors.size >= this.config.maxAuthors && !this.forgetAnAuthor()) {
      this.count("drop.too_many_authors");
      return null;
    }
    const state = newState(delivered);
    this.authors.set(author, state);
    return state;
  }

  forgetAnAuthor() {
    // Forget the least recently delivered author that is neither us nor connected. Its
    // envelopes stay in history (duplicates if they come again); a later one starts it
    // afresh, as a first word does.
    for (const [author, state] of this.authors) {
      if (author === this.key || this.connectedMembers.has(author)) continue;
      this.authors.delete(author);
      this.earlyTotal -= state.early.size;
      this.ackDue.delete(author);
      this.count("forgot.author");
      return true;
    }
    return false;
  }

  clockBounds(now) {
    // [refuse a lamport above, adopt a lamport up to], from our wall clock `now`.
    const lead = Math.floor(this.config.maxClockLead * 1000);
    return [millis(now) + lead, millis(now) + Math.floor(lead / 2)];
  }

  drainEarly(state) {
    let next;
    while ((next = state.early.get(state.delivered + 1)) !== undefined) {
      state.early.delete(next.seq);
      this.earlyTotal -= 1;
      this.deliver(state, next);
    }
  }

  deliver(state, env) {
    state.delivered = env.seq;
    this.authors.delete(env.author); // the most recent now
    this.authors.set(env.author, state);
    this.remember(env);
    // a blocked author's is kept and forwarded, never shown or read
    if (!this.blockedKeys.has(env.author)) this.events.push({ type: "delivered", env, content: this.read(env) });
  }

  read(env) {
    // What a delivered envelope says; its defects counted once, here.
    const [content, defects] = parseContent(env.kind, env.body);
    for (const defect of defects) this.count(defect);
    this.learnName(env, content);
    return content;
  }

  learnName(env, content) {
    // Keep env's name if it is its author's latest in total order (an old message from
    // history must not undo a rename); past maxNames the least recently named goes.
    if (content === null || content.name === null) return;
    const known = this.named.get(env.author);
    if (known !== undefined && order(known.env, env) >= 0) return;
    this.named.delete(env.author);
    this.named.set(env.author, { env, name: content.name });
    if (this.named.size > this.config.maxNames) this.named.delete(this.named.keys().next().value);
  }

  remember(env) {
    // Keep `env`; past maxHistory the first in total order goes. A binary search:
    // O(log n) comparisons per envelope, never a sort or a scan of the history.
    const id = `${env.author}:${env.seq}`;
    if (this.history.has(id)) return;
    this.history.set(id, env);
    this.ordered.splice(this.place(env), 0, env);
    if (this.ordered.length > this.config.maxHistory) {
      const oldest = this.ordered.shift();
      this.history.delete(`${oldest.author}:${oldest.seq}`);
    }
  }

  forget(env) {
    // Drop `env` from history (a binary search, as remember).
    if (!this.history.delete(`${env.author}:${env.seq}`)) return;
    this.ordered.splice(this.place(env) - 1, 1);
  }

  place(env) {
    // Where `env` goes in total order: after every envelope not after it.
    let lo = 0;
    let hi = this.ordered.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (order(env, this.ordered[mid]) < 0) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  parseSince(since) {
    // A hist-req's map: at most maxSince entries, or the request is refused. An entry
    // that is not (64 lower-case hex, a seq) counts as 0.
    if (typeof since !== "object" || since === null || Array.isArray(since)) {
      throw new ProtocolError("shape", "bad history request");
    }
    const entries = Object.entries(since);
    if (entries.length > this.config.maxSince) throw new ProtocolError("shape", "bad history request");
    const known = new Map();
    for (const [author, seq] of entries) {
      if (LOWER_HEX_KEY.test(author) && isCount(seq)) known.set(author, seq);
    }
    return known;
  }

  answerHistory(member, known, now) {
    // Other authors' envelopes after `known`, the newest that fit in historyCount
    // envelopes and historyAnswerBytes, sent in total order in frames of at most
    // historyFrameBytes.
    const horizon = (now - this.config.historyAge) * 1000;
    const chosen = [];
    let total = 0;
    for (let i = this.ordered.length - 1; i >= 0 && chosen.length < this.config.historyCount; i--) {
      const env = this.ordered[i];
      // our own words go by resend (from the member's ack), not twice
      if (env.author === this.key || env.author === member || env.seq <= (known.get(env.author) ?? 0)) continue;
      if (env.ts < horizon) continue;
      const size = wireSize(env);
      if (chosen.length && total + size > this.config.historyAnswerBytes) break;
      chosen.push([env, size]);
      total += size;
    }
    chosen.reverse();
    let frame = [];
    let length = HIST_FRAME_OVERHEAD;
    for (const [env, size] of chosen) {
      if (frame.length && length + 1 + size > this.config.historyFrameBytes) {
        this.frames.push([member, { t: "hist", envs: frame }]);
        frame = [];
        length = HIST_FRAME_OVERHEAD;
      }
      length += size + (frame.length ? 1 : 0);
      frame.push(env);
    }
    if (frame.length) this.frames.push([member, { t: "hist", envs: frame }]);
    // The asker's own last word we hold: proof of where its numbering is, for a key
    // that moved to a device that does not know (it is signed by the asker).
    const state = this.authors.get(member);
    const own = state && this.history.get(`${member}:${state.delivered}`);
    if (own) this.frames.push([member, { t: "msg", env: own }]);
  }

  // --- output and time ---

  framesToSend() {
    const frames = this.frames;
    this.frames = [];
    return frames;
  }

  takeEvents() {
    const events = this.events;
    this.events = [];
    return events;
  }

  timer() {
    const deadlines = [...this.ackDue.values()];
    for (const s of this.authors.values()) {
      if (s.gapSince !== null) deadlines.push(s.gapSince + this.config.resumeWindow);
    }
    deadlines.push(...this.retryAt.values());
    return deadlines.length ? Math.min(...deadlines) : null;
  }

  handleTimer(now) {
    for (const [author, due] of [...this.ackDue]) {
      if (due <= now) {
        this.ackDue.delete(author);
        if (this.connectedMembers.has(author) && this.authors.has(author)) {
          this.frames.push([author, { t: "ack", seq: this.authors.get(author).delivered }]);
        }
      }
    }
    // a copy: delivering after a gap moves the author to the end
    for (const [author, state] of [...this.authors]) {
      if (state.gapSince !== null && state.gapSince + this.config.resumeWindow <= now) {
        this.skipGap(author, state, now);
      }
    }
    for (const [member, due] of [...this.retryAt]) {
      if (due <= now) this.resend(member, now);
    }
  }

  resend(member, now) {
    // Re-send what `member` has not acknowledged: the glue may have refused it.
    const envs = this.unacked(member, this.config.resendBurst);
    if (!this.connectedMembers.has(member) || !envs.length) {
      this.retryAt.delete(member);
      return;
    }
    for (const env of envs) {
      this.frames.push([member, { t: "msg", env }]);
      this.count("resent");
    }
    this.retryAt.set(member, now + this.config.resendInterval);
  }

  skipGap(author, state, now) {
    // Declare the first gap lost, deliver what follows it.
    const firstEarly = Math.min(...state.early.keys());
    this.events.push({ type: "gap", author, first: state.delivered + 1, last: firstEarly - 1 });
    this.count("discontinuity");
    state.delivered = firstEarly - 1;
    this.drainEarly(state);
    state.gapSince = state.early.size ? now : null;
    if (!this.ackDue.has(author)) this.ackDue.set(author, now + this.config.ackDelay);
  }

  count(name) {
    this.counters[name] = (this.counters[name] ?? 0) + 1;
  }
}
