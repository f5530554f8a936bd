// What the widget (/widget, framed by embed.js on a site's page) takes from the page
// around it: a rule, without I/O, fed each `message` event (docs/widget.md).
//
// Who may say what (constrains the frames and windows of the visitor's browser):
// - Only the window that frames the widget (`event.source === window.parent`) may
//   speak to it; a sibling frame, a popup or an opener is refused ("not-parent").
// - The first message from the parent pins its origin; later messages from another
//   origin are refused ("other-origin"). An opaque origin ("null", a sandboxed
//   page) cannot be pinned and is refused ("opaque-origin").
// - The parent names a room of its own origin only: a page may put its visitors in
//   its own rooms, not in another site's ("foreign-url").
// - A message that is not one of the kinds below is refused ("malformed"), as is an
//   address that has no room ("bad-url", docs/protocol.md 2.1).
//
// Kinds the parent sends: {pagemesh: "room", url, scope: "page"|"site", accent?},
// {pagemesh: "shown"}, {pagemesh: "hidden"}. What is refused is counted, by reason.

import { MAX_URL_LENGTH, canonicalUrl } from "./rooms.js";

export const REASONS = ["not-parent", "opaque-origin", "other-origin", "malformed", "bad-url", "foreign-url"];
const ACCENT = /^#(?:[0-9a-f]{3}){1,2}$/i;

export class HostLink {
  constructor() {
    this.origin = null; // the parent's origin, from its first message
    this.refused = Object.fromEntries(REASONS.map((reason) => [reason, 0]));
    this.lastRefusal = null; // {reason, origin}, for the console
  }

  receive({ fromParent, origin, data }) {
    // What the parent said, as {type: "room", room, scope, accent} (the room's canonical
    // URL, accent a colour or null), {type: "shown"} or {type: "hidden"}; null when the
    // message is refused (counted).
    if (!fromParent) return this.refuse("not-parent", origin);
    if (this.origin === null) {
      if (typeof origin !== "string" || origin === "null" || !origin) return this.refuse("opaque-origin", origin);
      this.origin = origin;
    } else if (origin !== this.origin) {
      return this.refuse("other-origin", origin);
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) return this.refuse("malformed", origin);
    if (data.pagemesh === "shown" || data.pagemesh === "hidden") return { type: data.pagemesh };
    if (data.pagemesh !== "room") return this.refuse("malformed", origin);
    return this.room(data, origin);
  }

  room({ url, scope = "page", accent = null }, origin) {
    if (typeof url !== "string" || url.length > MAX_URL_LENGTH || !["page", "site"].includes(scope)) {
      return this.refuse("malformed", origin);
    }
    let room;
    try {
      room = canonicalUrl(url, scope);
    } catch {
      return this.refuse("bad-url", origin);
    }
    if (new URL(room).origin !== this.origin) return this.refuse("foreign-url", origin);
    return { type: "room", room, scope, accent: typeof accent === "string" && ACCENT.test(accent) ? accent : null };
  }

  refuse(reason, origin) {
    this.refused[reason] += 1;
    this.lastRefusal = { reason, origin: String(origin).slice(0, 200) };
    return null;
  }
}
