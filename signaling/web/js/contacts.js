// Contacts and presence for contacts only (docs/protocol.md 7), in the page: the
// runtime (`Friends`: our card, the cards members sent, the contacts in IndexedDB,
// publishing our presence for each contact and reading theirs through our node,
// as peer/friends.py's PresenceBook does) and the Contacts panel (`startContacts`:
// a list with online dots and "Join them", add from a member's row, rename, remove,
// what to tell contacts). Every petname and page reaches the DOM as text.

import { fromHex, hex } from "./bytes.js";
import { randomBytes, sign } from "./crypto.js";
import {
  MAX_CONTACTS,
  cardFrame,
  MAX_PETNAME,
  PRESENCE_REFRESH,
  PRESENCE_TTL,
  epochOf,
  makeCard,
  openPresence,
  pairSecret,
  parseCardFrame,
  presenceSlot,
  readEpochs,
  recordFromWire,
  recordToWire,
  sealPresence,
  x25519Seed,
} from "./friends.js";
import { startDms } from "./dm.js";
import { $, el } from "./dom.js";

const MAX_CARDS = 4096;
// put-record and get-record paced under the node's limits, as peer/friends.py RECORD_RATE:
// 1.8 a second past a burst of 20 (the node's frame bucket refuses without a request id).
const RECORD_RATE = 1.8;
const RECORD_BURST = 20;
const MODES = ["off", "on", "with-room"];
const LINK_EVENTS = ["connected", "disconnected", "member-joined", "member-left", "unreachable", "device", "revoked"];
const lastSeen = new Map(); // contact hex -> when the page last knew them online (ms), this visit

function ago(ms, at) {
  // "just now", "5 min ago", "3 h ago", else the day.
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  if (minutes < 24 * 60) return `${Math.floor(minutes / 60)} h ago`;
  return new Date(at).toLocaleDateString([], { day: "numeric", month: "short" });
}

export class Friends {
  static async open(peer, { refreshMs = PRESENCE_REFRESH * 1000, place = () => null } = {}) {
    const friends = new Friends(peer, refreshMs, place);
    const seed = await peer.store.seed();
    if (seed) {
      // The identity's card, also from a device (its identity's seed is the one kept).
      friends.xPrivate = await x25519Seed(seed);
      const signer = peer.person ?? peer.identity;
      friends.card = await makeCard((message) => sign(signer, message), fromHex(peer.identityHex, 32), friends.xPrivate);
      // Links that opened before the card was made get it now.
      for (const room of peer.rooms.values()) for (const link of room.links.values()) if (link.open) link.send(cardFrame(friends.card));
    }
    friends.mode = await peer.store.presenceMode();
    await friends.reload();
    friends.schedule(0);
    return friends;
  }

  constructor(peer, refreshMs, place) {
    this.peer = peer;
    this.refreshMs = refreshMs;
    this.place = place; // () => {room (hex), layer, page} of the room we are in, or null
    this.card = null; // null: a key made before seeds were kept has no card
    this.xPrivate = null;
    this.cards = new Map(); // person hex -> the card they sent, newest last
    this.cardsGiven = new Map(); // member hex -> the person whose card its link gave last
    this.cardGivers = new Map(); // person hex -> the member whose link gave the card kept
    this.contacts = [];
    this.secrets = new Map(); // contact hex -> pair secret
    this.madeFrom = new Map(); // contact hex -> the X25519 key (hex) of its card that secret is of
    this.seen = new Map(); // contact hex -> {seq, note}
    this.mode = "off";
    this.knocks = new Set(); // contacts a direct message of ours waits for (7.4): told `dm`, even when off
    this.unknocked = new Set(); // contacts no DM waits for any more: told offline at the next round when off
    this.seq = 0;
    this.timer = null;
    this.listeners = new Set();
    this.running = null;
    this.tokens = RECORD_BURST;
    this.stamp = Date.now() / 1000;
  }

  async pace() {
    const now = Date.now() / 1000;
    this.tokens = Math.min(RECORD_BURST, this.tokens + (now - this.stamp) * RECORD_RATE);
    this.stamp = now;
    if (this.tokens < 1) {
      await new Promise((resolve) => setTimeout(resolve, ((1 - this.tokens) / RECORD_RATE) * 1000));
      return this.pace();
    }
    this.tokens -= 1;
  }

  on(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener();
  }

  // --- cards and contacts ---

  async onCard(personHex, frame, giver = null) {
    // A card from the link of member `giver` (7.1): a link gives the card of the person
    // it speaks for now, so its earlier one, of another person, goes (unless another
    // link gave it since): one member cycling made-up identities keeps one card here
    // and pushes out nobody else's (as peer/peer.py Peer.card_received).
    let card;
    try {
      card = await parseCardFrame(fromHex(personHex, 32), frame);
    } catch {
      return; // a card that does not verify is ignored (7.1)
    }
    if (giver !== null) {
      const before = this.cardsGiven.get(giver);
      this.cardsGiven.delete(giver);
      if (before !== undefined && before !== personHex && this.cardGivers.get(before) === giver) {
        this.cards.delete(before);
        this.cardGivers.delete(before);
      }
      this.cardsGiven.set(giver, personHex);
      this.cardGivers.set(personHex, giver);
      while (this.cardsGiven.size > MAX_CARDS) this.cardsGiven.delete(this.cardsGiven.keys().next().value);
    }
    this.cards.delete(personHex);
    this.cards.set(personHex, card);
    while (this.cards.size > MAX_CARDS) {
      const gone = this.cards.keys().next().value;
      this.cards.delete(gone);
      this.cardGivers.delete(gone);
    }
    // A contact's newer card is taken by the next reload, which also catches a contact
    // being added while this card was on its way; the reload tells the list. Nothing else
    // shows a card (one is read when its person is added): a member sending its card over
    // and over must not have the whole list drawn again for each.
    if (this.contacts.some((c) => c.key === personHex && this.cardIsNewer(c))) await this.reload();
  }

  cardIsNewer(contact) {
    const card = this.cards.get(contact.key);
    return card !== undefined && (!contact.x || hex(contact.x) !== hex(card.x));
  }

  reload() {
    // The contacts as stored, and their pair secrets. One reload at a time, each reading
    // the store when its turn comes: two that overlapped (a card saved while a contact
    // was added) let the one that read the store first clear the secrets the other had
    // made, and a contact's card went unused (no presence, no "Message") until the next.
    const next = (this.reloading ?? Promise.resolve()).then(() => this.load());
    this.reloading = next.catch(() => {});
    return next;
  }

  async load() {
    const contacts = await this.peer.store.contacts();
    for (const [i, c] of contacts.entries()) {
      if (!this.cardIsNewer(c)) continue;
      const card = this.cards.get(c.key);
      contacts[i] = { ...c, x: card.x, sig: card.sig };
      await this.peer.store.saveContact(contacts[i]);
    }
    // A contact's secret is made again only when its card changed: a contact sending
    // card after card must not have every contact's secret made again for each.
    const secrets = new Map();
    const madeFrom = new Map(); // contact hex -> the X25519 key (hex) its secret is of
    const me = fromHex(this.peer.identityHex, 32);
    for (const c of contacts) {
      if (!this.xPrivate || !c.x || !c.sig) continue;
      const x = hex(c.x);
      madeFrom.set(c.key, x);
      if (this.madeFrom.get(c.key) === x) {
        if (this.secrets.has(c.key)) secrets.set(c.key, this.secrets.get(c.key));
        continue; // (or a low-order key, as before)
      }
      try {
        secrets.set(c.key, await pairSecret(me, this.xPrivate, { key: fromHex(c.key, 32), x: c.x, sig: c.sig }));
      } catch {
        // a low-order key: no presence with this contact
      }
    }
    this.contacts = contacts;
    this.secrets = secrets;
    this.madeFrom = madeFrom;
    // a card that came while this reload read the store is taken by the next
    if (contacts.some((c) => this.cardIsNewer(c))) this.reload();
    for (const key of this.seen.keys()) if (!this.contacts.some((c) => c.key === key)) this.seen.delete(key);
    this.changed();
  }

  async add(keyHex, petname, room = null) {
    petname = petname.trim();
    if (petname.length < 1 || [...petname].length > MAX_PETNAME) throw new RangeError(`a petname has 1 to ${MAX_PETNAME} characters`);
    if (!/^[0-9a-f]{64}$/.test(keyHex) || keyHex === this.peer.identityHex) throw new RangeError("a contact is another person's key");
    if (this.contacts.length >= MAX_CONTACTS && !this.contacts.some((c) => c.key === keyHex)) throw new RangeError(`at most ${MAX_CONTACTS} contacts`);
    const card = this.cards.get(keyHex) ?? null;
    const old = this.contacts.find((c) => c.key === keyHex);
    const contact = {
      key: keyHex,
      petname,
      x: card?.x ?? old?.x ?? null,
      sig: card?.sig ?? old?.sig ?? null,
      room: room?.key ?? old?.room ?? null, // where we met: kept in this browser only
      page: room?.url ?? old?.page ?? null,
      addedAt: old?.addedAt ?? Math.floor(Date.now() / 1000),
    };
    await this.peer.store.saveContact(contact);
    await this.reload();
    this.refresh();
    return contact;
  }

  async rename(keyHex, petname) {
    const contact = this.contacts.find((c) => c.key === keyHex);
    petname = petname.trim();
    if (!contact) return;
    if (petname.length < 1 || [...petname].length > MAX_PETNAME) throw new RangeError(`a petname has 1 to ${MAX_PETNAME} characters`);
    await this.peer.store.saveContact({ ...contact, petname });
    await this.reload();
  }

  async forget(keyHex) {
    await this.peer.store.forgetContact(keyHex);
    await this.reload();
  }

  async setMode(mode) {
    if (!MODES.includes(mode)) throw new RangeError("presence is off, on or with-room");
    if (this.mode !== "off" && mode === "off") await this.publish(false);
    this.mode = mode;
    await this.peer.store.savePresenceMode(mode);
    this.refresh();
  }

  online(now = Date.now() / 1000) {
    // contact hex -> their newest note, while it says online and has not expired
    const out = new Map();
    for (const [key, { note }] of this.seen) if (note.online && note.expires > now) out.set(key, note);
    return out;
  }

  // --- publishing and reading (7.2) ---

  schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  refresh() {
    // Publish and read now; the next round in refreshMs. Rounds never overlap.
    this.running = (this.running ?? Promise.resolve()).then(() => this.round()).catch((error) => console.warn("pagemesh presence:", error));
    this.schedule(this.refreshMs);
    return this.running;
  }

  async round() {
    if (!this.peer.node || this.peer.closing) return;
    if (this.mode !== "off" || this.knocks.size) await this.publish(true);
    if (this.mode === "off" && this.unknocked.size) await this.publish(false, this.unknocked); // seen online for a DM
    this.unknocked = new Set();
    await this.read();
    this.changed();
  }

  async publish(online, only = null) {
    const node = this.peer.node;
    if (!node || !this.secrets.size) return;
    const now = Date.now() / 1000;
    const where = online && this.mode === "with-room" ? this.place() : null;
    const note = { online, expires: Math.floor(now) + PRESENCE_TTL };
    if (where) Object.assign(note, { room: fromHex(where.room, 20), layer: where.layer ?? 0, page: where.page, node: node.nodeUrl || null });
    this.seq = Math.max(Math.floor(now * 1000), this.seq + 1);
    const me = fromHex(this.peer.identityHex, 32);
    for (const [key, secret] of this.secrets) {
      const knock = this.knocks.has(key);
      if (only ? !only.has(key) : this.mode === "off" && !knock) continue; // presence off: only a contact a DM waits for (7.4)
      const slot = await presenceSlot(secret, me, fromHex(key, 32), epochOf(now));
      const record = await sealPresence(slot, { ...note, dm: online && knock }, this.seq, randomBytes(12));
      await this.pace();
      try {
        await node.putRecord(recordToWire(record));
      } catch (error) {
        if (error.code === "unknown-type") return; // a node from before 7.3
      }
    }
  }

  async read() {
    const node = this.peer.node;
    const now = Date.now() / 1000;
    const me = fromHex(this.peer.identityHex, 32);
    for (const [key, secret] of this.secrets) {
      for (const epoch of readEpochs(now)) {
        const slot = await presenceSlot(secret, fromHex(key, 32), me, epoch);
        let wire;
        await this.pace();
        try {
          wire = await node.getRecord(hex(slot.dhtKey), hex(slot.publisher));
        } catch (error) {
          if (error.code === "unknown-type") return;
          continue;
        }
        if (!wire) continue;
        try {
          const record = recordFromWire(wire);
          const note = await openPresence(slot, record, now);
          const last = this.seen.get(key);
          if (!last || record.seq > last.seq || last.note.expires <= now) this.seen.set(key, { seq: record.seq, note });
        } catch {
          // junk a node or a stranger put there: ignored
        }
      }
    }
  }

  setKnocks(contacts) {
    // The contacts a direct message of ours waits for (7.4); published now when changed.
    const next = new Set([...contacts].filter((key) => this.secrets.has(key)));
    if (next.size === this.knocks.size && [...next].every((key) => this.knocks.has(key))) return;
    for (const key of this.knocks) if (!next.has(key)) this.unknocked.add(key);
    for (const key of next) this.unknocked.delete(key);
    this.knocks = next;
    this.refresh();
  }

  knocking(now = Date.now() / 1000) {
    // Online contacts whose note says a direct message of theirs waits for us.
    return new Set([...this.online(now)].filter(([, note]) => note.dm).map(([key]) => key));
  }

  goingOffline() {
    // On leaving the page: notes that say so, sent as far as the page lives (7.2).
    if (this.mode !== "off" || this.knocks.size) this.publish(false);
  }
}

// --- the Contacts panel ---

function ask({ title, text, value, run, key }) {
  // The contact dialog: a petname, then `run(petname)`; an error stays in the dialog.
  // Done, the keyboard's focus goes to contact `key`'s row (Message, else Rename): the
  // button that opened the dialog is gone with the list drawn again, and a closing
  // dialog gave the focus to nothing.
  const dialog = $("contact-dialog");
  $("contact-dialog-title").textContent = title;
  $("contact-dialog-text").textContent = text;
  $("contact-petname").value = value;
  $("contact-error").textContent = "";
  $("contact-form").onsubmit = async (event) => {
    event.preventDefault();
    try {
      await run($("contact-petname").value);
      dialog.close();
      const row = `#contacts li[data-key="${key}"]`;
      document.querySelector(`${row} [data-focus="dm"], ${row} [data-focus="rename"]`)?.focus();
    } catch (error) {
      $("contact-error").textContent = error.message;
    }
  };
  $("contact-cancel").onclick = () => dialog.close();
  dialog.showModal();
  $("contact-petname").select();
}

export function startContacts(peer, host) {
  // `host`: {room() -> the Room we are in or null, who(key) -> a member's label,
  // personOf(key) -> the person a member key speaks for, join(url, wish), move(layer)}.
  const view = { friends: null };
  const place = () => {
    const room = host.room();
    return room ? { room: room.key, layer: room.layer, page: room.url } : null;
  };
  Friends.open(peer, { refreshMs: peer.config.presenceRefreshMs ?? PRESENCE_REFRESH * 1000, place }).then((friends) => {
    view.friends = peer.friends = friends;
    startDms(peer, friends, { room: host.room, paneChanged: host.paneChanged, statusOf: (key) => statusOf(key) }); // direct messages (7.4)
    $("presence-mode").value = friends.mode;
    friends.on(() => render());
    render();
    document.body.dataset.contacts = "ready";
  });
  $("presence-mode").addEventListener("change", async () => {
    await view.friends?.setMode($("presence-mode").value);
    $("contacts-note").textContent = { off: "Your contacts see nothing of you.", on: "Your contacts see when you are online.", "with-room": "Your contacts see when you are online, and which page and group." }[$("presence-mode").value];
  });
  window.addEventListener("pagehide", () => view.friends?.goingOffline());
  // A link that opens or closes says at once whether a contact is here (statusOf).
  let soon = null;
  peer.on((event) => {
    if (!LINK_EVENTS.includes(event.type) || soon !== null) return;
    soon = setTimeout(() => {
      soon = null;
      render();
    }, 0);
  });

  function where(note) {
    if (!note.room) return "online";
    const group = `group ${(note.layer ?? 0) + 1}`;
    const room = host.room();
    if (room && hex(note.room) === room.key) return (note.layer ?? 0) === room.layer ? `here, in ${group}` : `on this page, in ${group}`;
    return `on ${note.page ?? "a page"}, ${group}`;
  }

  function linked(key) {
    // A link up with one of the contact's keys: in the room we are in, or in our DM room.
    const room = host.room();
    for (const [member, link] of room?.links ?? []) if (link.open && host.personOf(member) === key) return "room";
    return peer.dms?.rooms.get(key)?.contactLinked() ? "dm" : null;
  }

  function statusOf(key, now = Date.now()) {
    // One status from what the page sees (a link up: online now, whatever the last note
    // said) and what the contact's presence notes say (7.2): {online, text, note}.
    const note = view.friends?.online(now / 1000).get(key) ?? null;
    const link = linked(key);
    if (link || note) lastSeen.set(key, now);
    if (link === "room") return { online: true, text: `here, in group ${(host.room().layer ?? 0) + 1}`, note: null };
    if (note) return { online: true, text: where(note), note };
    if (link === "dm") return { online: true, text: "online, in your conversation", note: null };
    // Offline: when we last saw them, from our eyes or from their newest note's age.
    const told = view.friends?.seen.get(key)?.note;
    const published = told ? Math.min(now, (told.expires - PRESENCE_TTL) * 1000) : 0;
    const last = Math.max(lastSeen.get(key) ?? 0, published);
    return { online: false, text: last > 0 ? `offline · last seen ${ago(now - last, last)}` : "offline", note: null };
  }

  async function joinThem(contact, note) {
    const room = host.room();
    if (room && hex(note.room) === room.key) await host.move(note.layer ?? 0);
    else if (note.page) await host.join(note.page, { layer: note.layer ?? 0 });
  }

  function render() {
    const friends = view.friends;
    if (!friends) return;
    const list = $("contacts");
    // The list is drawn anew at every change (a presence round, a card): a button that
    // had the keyboard's focus gets it back in the new list, else the focus stays in it.
    const active = document.activeElement;
    const again = list.contains(active) ? { key: active.closest("li[data-key]")?.dataset.key, what: active.dataset.focus } : null;
    list.replaceChildren();
    if (!friends.contacts.length) {
      list.append(el("li", { className: "hint" }, "No contacts yet: add someone from your group with “+ Contact”."));
    }
    for (const c of friends.contacts) {
      const status = statusOf(c.key);
      const note = status.note;
      const state = !c.x && !status.online ? "no contact card yet" : status.text;
      const li = el(
        "li",
        { dataset: { key: c.key, online: String(status.online) } },
        el("span", { className: "dot", role: "img", ariaLabel: status.online ? "online" : "offline" }),
        el("span", { className: "petname" }, c.petname),
        el("span", { className: "where" }, state),
      );
      if (note?.room && note.page && !state.startsWith("here")) {
        const button = el("button", { type: "button", className: "join-them", ariaLabel: `Join ${c.petname} (${where(note)})`, dataset: { focus: "join" } }, "Join them");
        button.addEventListener("click", () => joinThem(c, note));
        li.append(button);
      }
      const rename = el("button", { type: "button", className: "quiet", ariaLabel: `Rename ${c.petname}`, dataset: { focus: "rename" } }, "Rename");
      rename.addEventListener("click", () =>
        ask({ title: "Rename a contact", text: `Key ${c.key.slice(0, 12)}…`, value: c.petname, key: c.key, run: (name) => friends.rename(c.key, name) }),
      );
      const remove = el("button", { type: "button", className: "quiet", ariaLabel: `Remove ${c.petname}`, dataset: { focus: "remove" } }, "Remove");
      remove.addEventListener("click", async () => {
        await friends.forget(c.key);
        $("contacts-note").textContent = `${c.petname} is no longer a contact.`;
      });
      if (peer.dms && friends.secrets.has(c.key)) {
        const message = peer.dms.button(c);
        message.dataset.focus = "dm";
        li.append(message);
      }
      li.append(rename, remove);
      list.append(li);
    }
    if (again) {
      const row = again.key ? list.querySelector(`li[data-key="${again.key}"]`) : null;
      (row?.querySelector(`[data-focus="${again.what}"]`) ?? row?.querySelector("button") ?? list.querySelector("button") ?? $("presence-mode")).focus();
    }
    for (const li of document.querySelectorAll("#members li[data-key]")) decorate(li);
  }

  function decorate(li) {
    // "+ Contact" on a member's row (not ours, not someone already a contact).
    const key = li.dataset.key;
    const person = host.personOf(key);
    const known = view.friends?.contacts.some((c) => c.key === person);
    let button = li.querySelector(".add-contact");
    if (li.classList.contains("me") || person === peer.identityHex || known || !view.friends) {
      button?.remove();
      return;
    }
    if (!button) {
      button = el("button", { type: "button", className: "quiet add-contact" }, "+ Contact");
      button.addEventListener("click", () =>
        ask({
          title: "Add a contact",
          text: `Keep ${host.who(key)} as a contact, under a name you choose. Only you see it.`,
          value: host.who(key),
          key: host.personOf(key),
          run: async (name) => {
            await view.friends.add(host.personOf(key), name, host.room());
            $("contacts-note").textContent = `${name.trim()} is a contact.`;
          },
        }),
      );
      li.append(button);
    }
    button.ariaLabel = `Add ${host.who(key)} as a contact`;
  }

  return { decorate, render };
}
