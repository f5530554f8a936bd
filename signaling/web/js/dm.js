// Direct messages between two contacts (docs/protocol.md 7.4), in the page: which DM
// rooms to be in (`plan`, as peer/dm.py's), what waits for a contact and what reached
// them, and the conversation opened from the Contacts panel ("Message", with how many
// of theirs are unread). A DM room is an ordinary room whose id only the pair computes
// (friends.js dmRoom), where only the contact's keys get a link (peer.js Room.admits).
// Every text reaches the DOM as text.

import { hex } from "./bytes.js";
import { dmRoom } from "./friends.js";
import { readContent } from "./messaging.js";

export const MAX_DM_ROOMS = 16; // DM rooms joined at once, at most
const TICK_MS = 5000; // how often to look again at which DM rooms to be in
const SHOWN = 200; // messages a conversation shows
const $ = (id) => document.getElementById(id);

export function plan({ contacts, online, waiting, knocking, opened, joined, linked }) {
  // As peer/dm.py plan: wanted are the opened, the linked (a conversation going on), an
  // online contact whose note says `dm`, and a contact something of ours waits for;
  // never more than MAX_DM_ROOMS, never anyone but a contact.
  const known = new Set(contacts);
  const joinedSet = new Set(joined);
  const want = [];
  const groups = [
    [...opened],
    [...linked].filter((c) => joinedSet.has(c)),
    [...online].filter((c) => knocking.has(c)),
    [...waiting],
  ];
  for (const group of groups) {
    for (const contact of group.sort()) if (known.has(contact) && !want.includes(contact)) want.push(contact);
  }
  const keep = new Set(want.slice(0, MAX_DM_ROOMS));
  const leave = [...joinedSet].filter((c) => !keep.has(c)).sort();
  const roomFor = MAX_DM_ROOMS - (joinedSet.size - leave.length);
  const join = want
    .slice(0, MAX_DM_ROOMS)
    .filter((c) => !joinedSet.has(c))
    .slice(0, Math.max(0, roomFor));
  return { join, leave };
}

function textOf(env) {
  const content = readContent(env);
  if (content && typeof content.text === "string") return content.text;
  return env.kind === "text" ? env.body : null; // reactions and the like: not shown here
}

export class DirectMessages {
  constructor(peer, friends, { tickMs = TICK_MS } = {}) {
    this.peer = peer;
    this.friends = friends;
    this.tickMs = tickMs;
    this.keys = new Map(); // contact hex -> DM room hex
    this.rooms = new Map(); // contact hex -> joined DM Room
    this.kept = new Set(); // contacts whose conversation the person opened
    this.stored = new Map(); // contact hex -> our messages waiting, read from IndexedDB
    this.unread = new Map(); // contact hex -> their messages not seen yet
    this.listeners = new Set();
    this.timer = null;
    peer.on((event) => this.onEvent(event));
  }

  on(listener) {
    this.listeners.add(listener);
  }

  changed(contact) {
    for (const listener of this.listeners) listener(contact);
  }

  async roomKey(contact) {
    const secret = this.friends.secrets.get(contact);
    if (!secret) return null;
    if (!this.keys.has(contact)) this.keys.set(contact, hex(await dmRoom(secret)));
    return this.keys.get(contact);
  }

  async open(contact, keep = true) {
    // Join the DM room with `contact` (their card needed); `keep`: whatever presence says.
    const key = await this.roomKey(contact);
    if (key === null) throw new Error("no contact card from them yet: meet them in a room once more");
    if (keep) this.kept.add(contact);
    let room = this.rooms.get(contact);
    if (!room) {
      room = await this.peer.joinDm(contact, key);
      this.rooms.set(contact, room);
      this.stored.delete(contact);
      this.changed(contact);
    }
    return room;
  }

  async close(contact) {
    this.kept.delete(contact);
    const room = this.rooms.get(contact);
    this.rooms.delete(contact);
    if (room) {
      this.stored.set(contact, room.waiting().length);
      await this.peer.leave(room);
    }
    this.changed(contact);
  }

  waiting(contact) {
    // How many of ours wait for `contact` to come online.
    const room = this.rooms.get(contact);
    return room ? room.waiting().length : (this.stored.get(contact) ?? 0);
  }

  async send(contact, text) {
    const room = await this.open(contact);
    await room.sendChat(text);
    this.friends.setKnocks(this.waitingContacts());
    this.changed(contact);
    return room;
  }

  waitingContacts() {
    return [...this.friends.secrets.keys()].filter((c) => this.waiting(c) > 0);
  }

  async start() {
    // What waits since the last visit, from IndexedDB, then a look every tickMs.
    for (const contact of this.friends.secrets.keys()) {
      const key = await this.roomKey(contact);
      const state = await this.peer.store.roomState(key);
      if (!state?.history?.length) continue;
      const acked = (await this.peer.store.get("rooms", `dm-acked:${key}`)) ?? 0;
      const mine = state.history.filter((env) => env.author === this.peer.keyHex && env.seq > acked).length;
      if (mine) this.stored.set(contact, mine);
    }
    this.tick();
  }

  tick() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), this.tickMs);
    if (this.peer.closing || !this.peer.node) return;
    const contacts = [...this.friends.secrets.keys()];
    const waiting = this.waitingContacts();
    this.friends.setKnocks(waiting);
    const decided = plan({
      contacts,
      online: [...this.friends.online().keys()],
      waiting,
      knocking: this.friends.knocking(),
      opened: this.kept,
      joined: [...this.rooms.keys()],
      linked: [...this.rooms].filter(([, room]) => room.contactLinked()).map(([c]) => c),
    });
    for (const contact of decided.leave) if (!this.kept.has(contact)) this.close(contact).catch(() => {});
    for (const contact of decided.join) this.open(contact, false).catch(() => {}); // the next tick tries again
  }

  onEvent(event) {
    const room = event.room;
    if (!room || room.contact === null || room.contact === undefined) return;
    const contact = room.contact;
    if (event.type === "message" && !event.mine && !this.showing(contact)) {
      this.unread.set(contact, (this.unread.get(contact) ?? 0) + 1);
    }
    if (["message", "dm-delivered", "connected", "disconnected"].includes(event.type)) {
      if (event.type === "dm-delivered") this.friends.setKnocks(this.waitingContacts());
      this.changed(contact);
    }
  }

  showing(contact) {
    return this.view?.contact === contact && !$("dm-panel")?.hidden;
  }

  // --- the conversation, opened from the Contacts panel ---

  button(contact) {
    // "Message" on a contact's row, with how many of theirs are unread.
    const unread = this.unread.get(contact.key) ?? 0;
    const waiting = this.waiting(contact.key);
    let label = unread ? `Message (${unread})` : "Message";
    let aria = `Message ${contact.petname}` + (unread ? `, ${unread} unread` : "");
    if (waiting) {
      label += ` · ${waiting} waiting`;
      aria += `, ${waiting} waiting for them to come online`;
    }
    const button = Object.assign(document.createElement("button"), { type: "button", className: "dm-open", textContent: label });
    button.setAttribute("aria-label", aria);
    if (unread) button.dataset.unread = String(unread);
    if (waiting) button.dataset.waiting = String(waiting);
    button.addEventListener("click", () => this.show(contact));
    return button;
  }

  async show(contact) {
    this.view = { contact: contact.key, petname: contact.petname };
    const panel = ensurePanel();
    panel.hidden = false;
    $("dm-title").textContent = contact.petname;
    $("dm-text").setAttribute("aria-label", `Message to ${contact.petname}`);
    $("dm-close").setAttribute("aria-label", `Close the conversation with ${contact.petname}`);
    $("dm-messages").setAttribute("aria-label", `Messages with ${contact.petname}`);
    this.unread.delete(contact.key);
    this.render();
    this.friends.changed(); // the unread count on the row goes
    $("dm-form").onsubmit = async (event) => {
      event.preventDefault();
      const text = $("dm-text").value;
      if (!text.trim()) return;
      $("dm-text").value = "";
      try {
        await this.send(contact.key, text);
      } catch (error) {
        $("dm-status").textContent = `Not sent: ${error.message}`;
        return;
      }
      this.render();
    };
    $("dm-close").onclick = () => {
      panel.hidden = true;
      this.view = null;
      document.querySelector(`#contacts li[data-key="${contact.key}"] .dm-open`)?.focus();
    };
    $("dm-text").focus();
    try {
      await this.open(contact.key);
    } catch (error) {
      $("dm-status").textContent = error.message;
      return;
    }
    this.render();
  }

  render() {
    const view = this.view;
    if (!view || $("dm-panel")?.hidden) return;
    const room = this.rooms.get(view.contact);
    const list = $("dm-messages");
    list.replaceChildren();
    for (const env of room ? room.transcript().slice(-SHOWN) : []) {
      const text = textOf(env);
      if (text === null) continue;
      const mine = env.author === this.peer.keyHex;
      const li = document.createElement("li");
      li.className = mine ? "mine" : "theirs";
      const who = Object.assign(document.createElement("span"), { className: "who", textContent: mine ? "You" : view.petname });
      const body = Object.assign(document.createElement("span"), { className: "text", textContent: text });
      li.append(who, body);
      if (mine) {
        const delivered = env.seq <= room.dmAcked;
        const tick = Object.assign(document.createElement("span"), { className: "tick", textContent: delivered ? "✓ delivered" : "waiting" });
        li.dataset.state = delivered ? "delivered" : "waiting";
        li.append(tick);
      }
      list.append(li);
    }
    list.scrollTop = list.scrollHeight;
    const waiting = this.waiting(view.contact);
    const here = room?.contactLinked();
    let status;
    if (waiting) status = `${waiting === 1 ? "1 message waits" : `${waiting} messages wait`} for ${view.petname} to come online; kept here and sent when you both are.`;
    else if (here) status = `${view.petname} is here. Only the two of you can read this.`;
    else status = `${view.petname} is not here now; what you write waits until you both are online.`;
    $("dm-status").textContent = status;
  }
}

function ensurePanel() {
  // The conversation: after the Contacts panel, made once.
  let panel = $("dm-panel");
  if (panel) return panel;
  const make = (tag, props = {}) => Object.assign(document.createElement(tag), props);
  panel = make("section", { id: "dm-panel", hidden: true });
  panel.setAttribute("aria-labelledby", "dm-title");
  const head = make("div", { className: "dm-head" });
  head.append(make("h2", { id: "dm-title" }), make("button", { id: "dm-close", type: "button", className: "quiet", textContent: "Close" }));
  const list = make("ol", { id: "dm-messages" });
  list.setAttribute("aria-live", "polite");
  const status = make("p", { id: "dm-status", className: "hint" });
  status.setAttribute("role", "status");
  const form = make("form", { id: "dm-form", autocomplete: "off" });
  const input = make("input", { id: "dm-text", type: "text", maxLength: 4000 });
  form.append(input, make("button", { type: "submit", textContent: "Send" }));
  panel.append(head, list, status, form);
  $("contacts-panel").after(panel);
  return panel;
}

export function startDms(peer, friends) {
  const dms = new DirectMessages(peer, friends, { tickMs: peer.config.dmTickMs ?? TICK_MS });
  peer.dms = dms;
  dms.on(() => {
    dms.render();
    friends.changed();
  });
  dms.start();
  return dms;
}
