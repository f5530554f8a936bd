// Typing indicators (docs/protocol.md 5.0): who in a room is typing, and when
// to tell the others that we are. Sans-IO: every call takes `now` in
// seconds (as peer.js's clock), so tests drive it on virtual time.
//
// A `{"t":"typing"}` control frame says "I am typing". It is not an envelope:
// not kept, not ordered, not re-sent. We send one when the composer changes,
// at most every SEND_EVERY; a member is shown as typing for SHOW_FOR after its
// last frame, or until a message of its arrives or it goes. A member sending
// frames as fast as it likes costs one map update each and changes nothing
// shown after the first.

export const SEND_EVERY = 3;
export const SHOW_FOR = 6;
export const MAX_TYPISTS = 256; // a room's members, at most (docs/protocol.md 5.0, `max_members`)

export class Typing {
  constructor({ sendEvery = SEND_EVERY, showFor = SHOW_FOR, maxTypists = MAX_TYPISTS } = {}) {
    this.sendEvery = sendEvery;
    this.showFor = showFor;
    this.maxTypists = maxTypists;
    this.sentAt = null; // when we last told the others
    this.heardAt = new Map(); // member -> when its last frame came, the least recent first
  }

  // --- our side ---

  typed(now) {
    // The composer changed: true when a typing frame is due.
    if (this.sentAt !== null && now < this.sentAt + this.sendEvery) return false;
    this.sentAt = now;
    return true;
  }

  sent() {
    // Our message went: the next keystroke says "typing" again at once.
    this.sentAt = null;
  }

  // --- the others ---

  heard(member, now) {
    // A typing frame from `member`: true when the list of typists changed.
    const shown = this.isTyping(member, now);
    this.heardAt.delete(member);
    this.heardAt.set(member, now);
    if (this.heardAt.size > this.maxTypists) this.heardAt.delete(this.heardAt.keys().next().value);
    return !shown;
  }

  stopped(member, now) {
    // A message of `member`'s arrived, or it left: true when it was shown.
    const shown = this.isTyping(member, now);
    this.heardAt.delete(member);
    return shown;
  }

  isTyping(member, now) {
    const at = this.heardAt.get(member);
    return at !== undefined && now < at + this.showFor;
  }

  typists(now) {
    // Who is typing, the most recent first.
    const found = [];
    for (const [member, at] of this.heardAt) if (now < at + this.showFor) found.push(member);
    return found.reverse();
  }

  nextChange(now) {
    // When the next typist stops being shown (null when none is).
    let next = null;
    for (const [member, at] of this.heardAt) {
      if (now >= at + this.showFor) this.heardAt.delete(member);
      else next = next === null ? at + this.showFor : Math.min(next, at + this.showFor);
    }
    return next;
  }
}

export function typingLine(names) {
  // "Ana is typing…", "Ana and Ben are typing…", "Ana, Ben and 3 others are typing…".
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
}
