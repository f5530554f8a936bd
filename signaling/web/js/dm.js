// Direct messages between two contacts (docs/protocol.md 7.4), in the page: which DM
// rooms to be in (`plan`, as peer/dm.py's), what waits for a contact and what reached
// them, and the conversation opened from the Contacts panel ("Message", with how many
// of theirs are unread), shown in the main pane in the room's stead, the big composer
// writing to the contact while it is shown. A DM room is an ordinary room whose id only the pair computes
// (friends.js dmRoom), where only the contact's keys get a link (peer.js Room.admits).
// Files go as in any room (docs/protocol.md 5.2, transfer.js): the same offer bounds, the
// small images the page shows inline taken unasked, any other file fetched on a click.
// Unread counts are kept in IndexedDB, so a reload keeps them. Every text reaches the
// DOM as text.

import { hex } from "./bytes.js";
import { INLINE_IMAGE_TYPES, OFFER_LIMITS, acceptRuleTakes } from "./files.js";
import { dmRoom } from "./friends.js";
import { readContent } from "./messaging.js";
import { printable } from "./people.js";
import { $, size } from "./dom.js";

export const MAX_DM_ROOMS = 16; // DM rooms joined at once, at most
const TICK_MS = 5000; // how often to look again at which DM rooms to be in
const SHOWN = 200; // messages a conversation shows
const FILES_SHOWN = OFFER_LIMITS.perMember; // files a conversation keeps, each way (as many as a sender offers)
const MAX_UNREAD = 9999; // an unread count stops here
const UNREAD_KEY = "dm-unread"; // where unread counts are kept (store "rooms"), one per contact

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
  constructor(peer, friends, { tickMs = TICK_MS, host = {} } = {}) {
    this.peer = peer;
    this.host = host; // {room() -> the page's Room or null, paneChanged(), statusOf(contact) -> {online, text}}
    this.friends = friends;
    this.tickMs = tickMs;
    this.keys = new Map(); // contact hex -> DM room hex
    this.rooms = new Map(); // contact hex -> joined DM Room
    this.kept = new Set(); // contacts whose conversation the person opened
    this.stored = new Map(); // contact hex -> our messages waiting, read from IndexedDB
    this.unread = new Map(); // contact hex -> their messages not seen yet (kept in IndexedDB)
    this.files = new Map(); // contact hex -> Map(file id -> what the conversation shows of it)
    this.saving = null;
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

  seen(contact, count) {
    // Set a contact's unread count, and keep it for the next visit.
    if (count) this.unread.set(contact, Math.min(count, MAX_UNREAD));
    else this.unread.delete(contact);
    this.saveUnread();
  }

  saveUnread() {
    // One write at a time; a change during a write is written after it.
    if (this.saving) {
      this.saving.again = true;
      return;
    }
    const write = async () => {
      do {
        this.saving.again = false;
        const kept = {};
        for (const [contact, count] of this.unread) if (this.friends.secrets.has(contact)) kept[contact] = count;
        await this.peer.store.put("rooms", UNREAD_KEY, kept);
      } while (this.saving.again);
    };
    this.saving = { again: false };
    write()
      .catch(() => {}) // a closed store: the counts live on in memory
      .finally(() => (this.saving = null));
  }

  async loadUnread() {
    // Counts for contacts we still have (a forgotten contact's go), each bounded.
    const kept = (await this.peer.store.get("rooms", UNREAD_KEY)) ?? {};
    if (typeof kept !== "object") return;
    for (const [contact, count] of Object.entries(kept)) {
      if (!this.friends.secrets.has(contact) || !Number.isSafeInteger(count) || count < 1) continue;
      this.unread.set(contact, Math.min(count + (this.unread.get(contact) ?? 0), MAX_UNREAD));
    }
  }

  filesOf(contact) {
    let files = this.files.get(contact);
    if (!files) this.files.set(contact, (files = new Map()));
    return files;
  }

  keepFile(contact, item) {
    // What the conversation shows of a file; the oldest of either side go past FILES_SHOWN.
    const files = this.filesOf(contact);
    const known = files.get(item.id);
    if (known) return Object.assign(known, item, { at: known.at });
    files.set(item.id, item);
    const side = [...files.values()].filter((f) => f.mine === item.mine);
    for (const old of side.slice(0, Math.max(0, side.length - FILES_SHOWN))) {
      if (old.url) URL.revokeObjectURL(old.url);
      files.delete(old.id);
    }
    return item;
  }

  async shareFiles(contact, list) {
    // Offer files to the contact in the DM room (joined if it is not).
    const room = await this.open(contact);
    for (const file of list) {
      try {
        const offer = await room.sendFile(file);
        const url = INLINE_IMAGE_TYPES.includes(offer.mime.toLowerCase()) ? URL.createObjectURL(file) : null;
        this.keepFile(contact, { ...fileItem(offer, true), state: "offered", url, inline: url !== null });
      } catch (error) {
        $("dm-status").textContent = `Could not share ${file.name}: ${error.message}`;
        continue;
      }
      this.render();
    }
  }

  onFileEvent(contact, room, event) {
    const files = this.filesOf(contact);
    if (event.type === "file-offered") {
      const { offer, earlier } = event;
      const taken = acceptRuleTakes(room.transfers.autoAccept, offer, earlier); // the policy fetches it now
      if (files.get(offer.id)?.state === "done") return;
      this.keepFile(contact, { ...fileItem(offer, false), state: taken ? "getting" : "offered", earlier });
      if (!this.showing(contact)) this.seen(contact, (this.unread.get(contact) ?? 0) + 1);
      return;
    }
    const item = files.get(event.id);
    if (!item) return;
    if (event.type === "file-progress") {
      item.done = event.done;
      if (!item.mine) item.state = "getting";
      const bar = document.querySelector(`#dm-messages li[data-file="${item.id}"] progress`);
      if (bar && this.showing(contact)) {
        bar.value = event.done;
        return true; // shown in place
      }
    } else if (event.type === "file-done" && event.blob) {
      item.state = "done";
      item.done = item.size;
      item.url = URL.createObjectURL(event.blob);
      item.inline = event.blob.type.startsWith("image/"); // typed so if it may be shown (files.js)
    } else if (event.type === "file-done") {
      item.delivered = true;
    } else if (event.type === "file-failed") {
      item.state = "failed";
      item.reason = event.reason;
    }
    return false;
  }

  getFile(contact, id) {
    const room = this.rooms.get(contact);
    const item = this.files.get(contact)?.get(id);
    if (!item) return;
    if (!room?.transfers.offers.has(id)) {
      item.state = "failed";
      item.reason = "no longer offered (it got old, or they left)";
    } else {
      room.acceptFile(id);
      item.state = "getting";
      item.done = 0;
    }
    this.render(`get:${id}`);
  }

  async start() {
    // What waits since the last visit, from IndexedDB, then a look every tickMs.
    try {
      await this.loadUnread();
    } catch {
      // nothing kept, or a store we cannot read: counts start again from nothing
    }
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
    if (event.type === "message" && !event.mine && !this.showing(contact) && textOf(event.env) !== null) {
      this.seen(contact, (this.unread.get(contact) ?? 0) + 1);
    }
    if (event.type.startsWith("file-")) {
      if (!this.onFileEvent(contact, room, event)) this.changed(contact);
      return;
    }
    if (["message", "dm-delivered", "connected", "disconnected"].includes(event.type)) {
      if (event.type === "dm-delivered") this.friends.setKnocks(this.waitingContacts());
      this.changed(contact);
    }
  }

  showing(contact) {
    return this.view?.contact === contact && !$("dm-panel")?.hidden;
  }

  // --- the conversation, opened from the Contacts panel, shown in the main pane ---

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
    if (this.view?.contact === contact.key) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => this.show(contact));
    return button;
  }

  async show(contact) {
    // The conversation takes the main pane (the room's transcript steps aside) and the
    // big composer writes to the contact; Escape or "Back to the room" brings the room back.
    this.view = { contact: contact.key, petname: contact.petname };
    const panel = ensurePanel(() => this.hide());
    panel.hidden = false;
    $("chat").dataset.pane = "dm";
    document.body.classList.remove("people-open"); // a phone: the pane, not the side column
    $("people-toggle")?.setAttribute("aria-expanded", "false");
    $("dm-title").textContent = `Direct messages with ${contact.petname}`;
    this.roomNew = 0;
    this.backLabel();
    $("dm-messages").setAttribute("aria-label", `Messages with ${contact.petname}`);
    $("dm-status").textContent = "";
    this.seen(contact.key, 0);
    this.host.paneChanged?.();
    this.render();
    this.friends.changed(); // the unread count on the row goes
    $("text").focus();
    try {
      await this.open(contact.key);
    } catch (error) {
      $("dm-status").textContent = error.message;
      return;
    }
    this.render();
  }

  backLabel() {
    // "← Back to the room", with how many of the room's messages came meanwhile.
    const view = this.view;
    if (!view) return;
    const inRoom = Boolean(this.host.room?.());
    const news = this.roomNew ? ` (${this.roomNew} new)` : "";
    $("dm-close").textContent = inRoom ? `← Back to the room${news}` : "← Close";
    $("dm-close").setAttribute(
      "aria-label",
      inRoom ? `Back to the room${this.roomNew ? `, ${this.roomNew} new messages there` : ""}, leaving the conversation with ${view.petname}` : `Close the conversation with ${view.petname}`,
    );
  }

  roomNews() {
    this.roomNew = Math.min((this.roomNew ?? 0) + 1, MAX_UNREAD);
    this.backLabel();
  }

  hide() {
    // Back to the room: the pane and the composer are the room's again; the keyboard's
    // focus goes back to the row that opened the conversation when it is in view.
    const contact = this.view?.contact;
    if (!this.view) return;
    this.view = null;
    const panel = $("dm-panel");
    if (panel) panel.hidden = true;
    delete $("chat").dataset.pane;
    this.host.paneChanged?.();
    this.friends.changed();
    const row = document.querySelector(`#contacts li[data-key="${contact}"] .dm-open`);
    if (this.host.room?.() || !row?.checkVisibility?.()) $("text").disabled ? $("messages").focus() : $("text").focus();
    else row.focus();
  }

  async sendText(text) {
    // What the big composer sends while the conversation is shown.
    const contact = this.view?.contact;
    if (!contact) return false;
    try {
      await this.send(contact, text);
    } catch (error) {
      $("dm-status").textContent = `Not sent: ${error.message}`;
      return false;
    }
    this.render();
    return true;
  }

  shareShown(list) {
    // Files chosen, dropped or pasted while the conversation is shown.
    const contact = this.view?.contact;
    if (!contact) return;
    this.shareFiles(contact, list).catch((error) => ($("dm-status").textContent = `Not shared: ${error.message}`));
  }

  render(focus = null) {
    const view = this.view;
    if (!view || $("dm-panel")?.hidden) return;
    const room = this.rooms.get(view.contact);
    const list = $("dm-messages");
    const here = Boolean(room?.contactLinked());
    const online = here || Boolean(this.host.statusOf?.(view.contact)?.online);
    const away = !online;
    // a button or link in the list keeps the keyboard's focus across the redraw
    const active = document.activeElement;
    focus ??= list.contains(active) ? active.dataset.focus : null;
    list.replaceChildren();
    const rows = [];
    for (const env of room ? room.transcript().slice(-SHOWN) : []) rows.push({ at: env.ts, env });
    for (const item of this.files.get(view.contact)?.values() ?? []) rows.push({ at: item.at, item });
    rows.sort((a, b) => a.at - b.at);
    for (const { env, item } of rows) {
      if (item) {
        list.append(this.fileRow(item, view.petname));
        continue;
      }
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
        const tick = Object.assign(document.createElement("span"), { className: "tick", textContent: delivered ? "✓ delivered" : away ? `waiting for ${view.petname} to come online` : "sending…" });
        li.dataset.state = delivered ? "delivered" : "waiting";
        li.append(tick);
      }
      list.append(li);
    }
    list.scrollTop = list.scrollHeight;
    if (focus) {
      const [kind, id] = focus.split(":");
      const next = list.querySelector(`[data-focus="${focus}"]`) ?? (kind === "get" ? list.querySelector(`[data-focus="save:${id}"]`) : null);
      (next ?? $("text")).focus();
    }
    const waiting = this.waiting(view.contact);
    const count = waiting === 1 ? "1 message waits" : `${waiting} messages wait`;
    // Their side joins once our note tells it a message waits, which it reads only if it
    // keeps us as a contact too (7.4): said until a note of theirs shows that it does.
    const holdsUs = this.friends.seen.has(view.contact);
    const joins = holdsUs ? "once their side joins this conversation" : "once their side joins this conversation, which it does if they keep you as a contact too";
    let status;
    if (waiting && here) status = `${count} for ${view.petname} to confirm it.`;
    else if (waiting && online) status = `${count} for ${view.petname}: they are online, and get it ${joins}.`;
    else if (waiting) status = `${count} for ${view.petname} to come online; kept here and sent when you both are.`;
    else if (here) status = `${view.petname} is here. Only the two of you can read this.`;
    else if (online) status = `${view.petname} is online; what you write reaches them ${joins}.`;
    else status = `${view.petname} is not here now; what you write waits until you both are online.`;
    $("dm-status").textContent = status;
  }

  fileRow(item, petname) {
    // A file in the conversation: offered, on its way, there (an image inline), or failed.
    const make = (tag, props = {}) => Object.assign(document.createElement(tag), props);
    const li = make("li", { className: `file ${item.mine ? "mine" : "theirs"}` });
    li.dataset.file = item.id;
    li.dataset.state = item.state;
    const what = `${item.name} (${size(item.size)})`;
    const verb = item.mine ? "shared" : item.state === "offered" ? (item.earlier ? "shared earlier" : "offers") : "shared";
    li.append(make("span", { className: "who", textContent: item.mine ? "You" : petname }), make("span", { className: "text", textContent: `${verb} ${what}` }));
    const image = item.url && item.inline;
    if (image) {
      const img = make("img", { src: item.url, alt: item.name });
      img.addEventListener("load", () => ($("dm-messages").scrollTop = $("dm-messages").scrollHeight));
      li.append(img);
    }
    if (!item.mine && (item.state === "offered" || item.state === "getting")) {
      // stays while the file comes (the keyboard's focus with it), then gives way to Save
      const getting = item.state === "getting";
      const get = make("button", { type: "button", className: "get", textContent: getting ? "Getting" : "Get" });
      get.setAttribute("aria-label", `${getting ? "Getting" : "Get"} ${item.name} (${size(item.size)})`);
      if (getting) get.setAttribute("aria-disabled", "true");
      get.dataset.focus = `get:${item.id}`;
      get.addEventListener("click", () => getting || this.getFile(this.view.contact, item.id));
      li.append(get);
    }
    if (item.state === "getting" || (item.mine && item.done && item.done < item.size)) {
      const bar = make("progress", { max: item.size || 1, value: item.done ?? 0 });
      bar.setAttribute("aria-label", `${item.mine ? "Sending" : "Receiving"} ${item.name}`);
      li.append(bar);
    }
    if (!item.mine && item.state === "done") {
      const save = make("a", { href: item.url, download: item.name, className: "download", textContent: "Save" });
      save.setAttribute("aria-label", `Save ${item.name}`);
      save.dataset.focus = `save:${item.id}`;
      save.dataset.sha256 = item.sha256;
      li.append(save);
    }
    if (item.mine) li.append(make("span", { className: "tick", textContent: item.delivered ? `✓ ${petname} has it` : "offered" }));
    if (item.state === "failed") li.append(make("span", { className: "failed", textContent: `failed: ${item.reason}` }));
    return li;
  }
}

function fileItem(offer, mine) {
  const { id, size: bytes, mime, sha256 } = offer;
  const name = printable(offer.name); // as shown: nothing hidden or reordered (people.js)
  return { id, name, size: bytes, mime, sha256, mine, at: Date.now(), done: 0 };
}

function ensurePanel(back) {
  // The conversation: in the main pane, beside the room's transcript (one shows at a
  // time), made once. The big composer under it writes to the contact.
  let panel = $("dm-panel");
  if (panel) return panel;
  const make = (tag, props = {}) => Object.assign(document.createElement(tag), props);
  panel = make("section", { id: "dm-panel", hidden: true });
  panel.setAttribute("aria-labelledby", "dm-title");
  const close = make("button", { id: "dm-close", type: "button", className: "quiet", textContent: "← Back to the room" });
  close.addEventListener("click", back);
  const head = make("div", { className: "dm-head" });
  head.append(close, make("h2", { id: "dm-title" }));
  const list = make("ol", { id: "dm-messages", tabIndex: 0 });
  list.setAttribute("aria-live", "polite");
  const status = make("p", { id: "dm-status", className: "hint" });
  status.setAttribute("role", "status");
  panel.append(head, list, status);
  $("compose").before(panel);
  // Escape anywhere but in a dialog or a menu goes back to the room.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || panel.hidden || event.defaultPrevented) return;
    if (event.target.closest?.("dialog, details[open]")) return;
    event.preventDefault();
    back();
  });
  return panel;
}

function unreadBadge(dms) {
  // How many direct messages are unread, beside "People" (a phone folds the contacts away).
  const toggle = $("people-toggle");
  if (!toggle) return;
  let badge = $("dm-unread");
  if (!badge) {
    badge = Object.assign(document.createElement("span"), { id: "dm-unread", hidden: true });
    toggle.after(badge);
  }
  let total = 0;
  for (const count of dms.unread.values()) total += count;
  badge.hidden = total === 0;
  badge.textContent = total ? `✉ ${Math.min(total, MAX_UNREAD)} unread` : "";
}

export function startDms(peer, friends, host = {}) {
  const dms = new DirectMessages(peer, friends, { tickMs: peer.config.dmTickMs ?? TICK_MS, host });
  peer.dms = dms;
  dms.on(() => {
    dms.render();
    friends.changed();
  });
  friends.on(() => unreadBadge(dms));
  dms.start();
  return dms;
}
