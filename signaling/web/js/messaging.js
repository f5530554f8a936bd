// Reliable room messaging, the browser's port of peer/messaging.py
// (docs/protocol.md 5.0.1). No I/O: the caller feeds frames (whose envelope
// signatures it has already checked), connection changes and the time, and
// takes out frames per member, events, and the next timer.
//
// Each author numbers its messages 1, 2, ...; receivers deliver each author's
// messages exactly once and in seq order, acknowledge cumulatively, and a
// Lamport clock gives the one display order (lamport, author) that every
// member converges to. The clock is hybrid, anchored to wall time in ms: an
// envelope more than maxClockLead ahead of our wall clock is refused, and our
// clock adopts what it receives only up to half of that ahead, so nobody can
// push a member's clock out of reach of the others.

import { ProtocolError, utf8 } from "./bytes.js";

export const MESSAGE_CONTEXT = "pagemesh-msg/1\0";

export const DEFAULTS = {
  maxBodyBytes: 16384,
  maxUnacked: 1000,
  maxOutbox: 10000,
  maxEarly: 1000,
  historyCount: 200,
  historyAge: 3600,
  resumeWindow: 30,
  ackDelay: 0.02,
  maxHistory: 5000,
  maxClockLead: 3600, // seconds; see ReliableRoom.clockBounds
};

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

export const order = (a, b) => a.lamport - b.lamport || (a.author < b.author ? -1 : a.author > b.author ? 1 : 0);

export class MessagingError extends Error {}

export class ReliableRoom {
  constructor(room, key, config = {}, state = {}, now = null) {
    // `room` and `key` are hex; `state` restores seq, lamport, delivered and history.
    // Given `now`, the restored clock is repaired as if the history were received now
    // (docs/protocol.md 5.0.1): envelopes beyond the clock lead are left out (listed in
    // refusedOnRestore; our own are not re-sent, every member would refuse them), and
    // the clock comes down to what the kept ones and the adoption bound allow.
    this.room = room;
    this.key = key;
    this.config = { ...DEFAULTS, ...config };
    this.seq = state.seq ?? 0;
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
    this.authors = new Map(
      Object.entries(state.delivered ?? {}).map(([a, n]) => [a, { delivered: n, early: new Map(), gapSince: null }]),
    );
    this.authors.set(this.key, { delivered: this.seq, early: new Map(), gapSince: null });
    this.outbox = new Map();
    this.acked = new Map();
    this.connectedMembers = new Set();
    this.history = new Map();
    this.frames = [];
    this.events = [];
    this.ackDue = new Map();
    this.counters = {};
    for (const env of kept) {
      this.remember(env);
      if (env.author === this.key) this.outbox.set(env.seq, env);
    }
  }

  // --- the application's side ---

  reserve(body, now, kind = "text") {
    // Number the next message; the caller signs it and hands it to commit().
    if (utf8(body).length > this.config.maxBodyBytes) {
      throw new MessagingError(`a message is at most ${this.config.maxBodyBytes} bytes`);
    }
    for (const member of this.connectedMembers) {
      if (this.seq - (this.acked.get(member) ?? 0) >= this.config.maxUnacked) {
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

  commit(env) {
    this.outbox.set(env.seq, env);
    while (this.outbox.size > this.config.maxOutbox) this.outbox.delete(this.outbox.keys().next().value);
    this.authors.get(this.key).delivered = Math.max(this.authors.get(this.key).delivered, env.seq);
    this.remember(env);
    this.events.push({ type: "delivered", env });
    for (const member of this.connectedMembers) this.frames.push([member, { t: "msg", env }]);
  }

  transcript() {
    return [...this.history.values()].sort(order);
  }

  state() {
    const delivered = {};
    for (const [author, s] of this.authors) delivered[author] = s.delivered;
    const recent = this.transcript().slice(-this.config.historyCount);
    return { seq: this.seq, lamport: this.lamport, delivered, history: recent };
  }

  // --- connections ---

  connected(member, now) {
    this.connectedMembers.add(member);
    let start;
    if (this.acked.has(member)) {
      start = this.acked.get(member) + 1;
    } else {
      // a member we never heard from gets recent history, not everything we said
      start = Math.max(1, this.seq - this.config.historyCount + 1);
      this.acked.set(member, start - 1);
    }
    for (let seq = start; seq <= this.seq; seq++) {
      const env = this.outbox.get(seq);
      if (env) this.frames.push([member, { t: "msg", env }]);
    }
    const since = {};
    for (const [author, s] of this.authors) since[author] = s.delivered;
    this.frames.push([member, { t: "hist-req", since }]);
  }

  disconnected(member) {
    this.connectedMembers.delete(member);
    this.ackDue.delete(member);
  }

  // --- input ---

  receive(member, frame, now) {
    // One frame from `member`, envelopes already verified; bad ones are counted.
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
      this.acked.set(member, Math.max(this.acked.get(member) ?? 0, frame.seq));
    } else if (frame.t === "hist-req") {
      this.answerHistory(member, frame.since, now);
    } else {
      throw new ProtocolError("shape", "unknown frame");
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
    if (env.author === this.key) return; // our own, echoed back in history
    let state = this.authors.get(env.author);
    if (state === undefined) {
      // First word from this author: start at what we got (history fills the rest).
      state = { delivered: env.seq - 1, early: new Map(), gapSince: null };
      this.authors.set(env.author, state);
    }
    if (env.seq <= state.delivered || state.early.has(env.seq)) {
      this.count("duplicate");
    } else if (env.seq === state.delivered + 1) {
      this.deliver(state, env);
      this.drainEarly(state);
      state.gapSince = state.early.size ? now : null;
    } else {
      if (state.early.size >= this.config.maxEarly) throw new ProtocolError("shape", "too many early envelopes");
      state.early.set(env.seq, env);
      if (state.gapSince === null) state.gapSince = now;
    }
    if (!this.ackDue.has(env.author)) this.ackDue.set(env.author, now + this.config.ackDelay);
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
      this.deliver(state, next);
    }
  }

  deliver(state, env) {
    state.delivered = env.seq;
    this.remember(env);
    this.events.push({ type: "delivered", env });
  }

  remember(env) {
    this.history.set(`${env.author}:${env.seq}`, env);
    if (this.history.size > this.config.maxHistory) {
      const oldest = [...this.history.values()].sort(order)[0];
      this.history.delete(`${oldest.author}:${oldest.seq}`);
    }
  }

  answerHistory(member, since, now) {
    if (typeof since !== "object" || since === null || Object.keys(since).length > 10000) {
      throw new ProtocolError("shape", "bad history request");
    }
    const horizon = (now - this.config.historyAge) * 1000;
    const wanted = this.transcript()
      .filter((env) => env.author !== this.key && env.author !== member)
      .filter((env) => env.seq > (Number.isSafeInteger(since[env.author]) ? since[env.author] : 0))
      .filter((env) => env.ts >= horizon)
      .slice(-this.config.historyCount);
    if (wanted.length) this.frames.push([member, { t: "hist", envs: wanted }]);
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
    return deadlines.length ? Math.min(...deadlines) : null;
  }

  handleTimer(now) {
    for (const [author, due] of [...this.ackDue]) {
      if (due <= now) {
        this.ackDue.delete(author);
        if (this.connectedMembers.has(author)) {
          this.frames.push([author, { t: "ack", seq: this.authors.get(author).delivered }]);
        }
      }
    }
    for (const [author, state] of this.authors) {
      if (state.gapSince !== null && state.gapSince + this.config.resumeWindow <= now) {
        this.skipGap(author, state, now);
      }
    }
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
