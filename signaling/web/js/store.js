// What a browser peer keeps between visits, in IndexedDB: its Ed25519 key
// pair (the private half not extractable) and, for keys made or imported since
// identity files exist, the 32-byte seed beside it (so the key can be exported,
// docs/identity.md), its display name, and per room the
// messaging state (own seq, Lamport clock, delivered per author, recent
// history), so a reload never reuses a seq and resumes where it stopped; and the
// contacts (docs/protocol.md 7: key, petname, card, the room and page where you
// met, kept here only) with what you tell them (presence: off, on, with-room).

const DB_NAME = "pagemesh";
const DB_VERSION = 2; // 2: contacts
// Page rooms whose state (seq counts, recent history) is kept: the extension joins
// every page its person reads, so without a bound the database would grow with, and
// list, every page ever visited. The least recently used go first; a direct
// conversation's room is never dropped (it is a contact's, not a page's).
export const MAX_PAGE_ROOMS = 100;
const ROOM_HEX = /^[0-9a-f]{64}$/;

export function pageRoomsKept(used, roomHex, at, max = MAX_PAGE_ROOMS) {
  // From the kept map of page rooms to when each was last used (read back from the
  // database: anything malformed is dropped), with `roomHex` used `at`: the map to keep
  // and the rooms to forget, the least recently used beyond `max`.
  const entries = Object.entries(used !== null && typeof used === "object" && !Array.isArray(used) ? used : {})
    .filter(([hex, when]) => ROOM_HEX.test(hex) && Number.isFinite(when) && hex !== roomHex)
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
  const kept = [[roomHex, at], ...entries].slice(0, max);
  return { used: Object.fromEntries(kept), forget: entries.slice(max - 1).map(([hex]) => hex) };
}

function completed(tx) {
  // A transaction's end: resolved once committed, rejected if it failed or was aborted.
  return new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class Store {
  static async open(name = DB_NAME) {
    const opening = indexedDB.open(name, DB_VERSION);
    opening.onupgradeneeded = () => {
      // Each store made once, whatever version the database had (1 to 2 adds contacts).
      const db = opening.result;
      for (const name of ["identity", "rooms", "contacts"]) {
        if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
      }
    };
    return new Store(await request(opening));
  }

  constructor(db) {
    this.db = db;
    this.pageRoomsUsed = new Set(); // page rooms whose use this session is noted already
  }

  async get(storeName, key) {
    const tx = this.db.transaction(storeName, "readonly");
    return request(tx.objectStore(storeName).get(key));
  }

  async put(storeName, key, value) {
    const tx = this.db.transaction(storeName, "readwrite");
    tx.objectStore(storeName).put(value, key);
    await completed(tx);
  }

  identity() {
    return this.get("identity", "key");
  }

  async blocks() {
    // Keys blocked or muted (docs/protocol.md 5.4), as stored: read through blocks.js's
    // parseBlockList. One list under `identity`, so no new object store or version.
    return (await this.get("identity", "blocks")) ?? [];
  }

  saveBlocks(list) {
    return this.put("identity", "blocks", list);
  }

  saveIdentity(pair, seed = null) {
    return this.put("identity", "key", pair).then(() => (seed ? this.put("identity", "seed", seed) : undefined));
  }

  async seed() {
    // The seed of the key, or null for a key made before seeds were kept (not exportable).
    return (await this.get("identity", "seed")) ?? null;
  }

  async replaceIdentity(pair, seed) {
    // An imported key in place of the old one, in one transaction: the key, its seed,
    // and no room state of the old key (its seq counts and history are not the new key's).
    const tx = this.db.transaction(["identity", "rooms"], "readwrite");
    tx.objectStore("identity").put(pair, "key");
    tx.objectStore("identity").put(seed, "seed");
    tx.objectStore("rooms").clear();
    await completed(tx);
  }

  async name() {
    return (await this.get("identity", "name")) ?? "";
  }

  saveName(name) {
    return this.put("identity", "name", name);
  }

  roomState(roomHex) {
    return this.get("rooms", roomHex);
  }

  async saveRoomState(roomHex, state, { page = false } = {}) {
    // With `page`, a page's room: its first save of a session notes it as used and
    // forgets the page rooms used least recently beyond MAX_PAGE_ROOMS, in one
    // transaction with this save.
    if (!page || this.pageRoomsUsed.has(roomHex)) return this.put("rooms", roomHex, state);
    const tx = this.db.transaction(["identity", "rooms"], "readwrite");
    const identity = tx.objectStore("identity");
    const rooms = tx.objectStore("rooms");
    const done = completed(tx);
    const read = identity.get("pageRooms");
    read.onsuccess = () => {
      const { used, forget } = pageRoomsKept(read.result ?? null, roomHex, Date.now());
      identity.put(used, "pageRooms");
      for (const hex of forget) rooms.delete(hex);
      rooms.put(state, roomHex);
    };
    await done;
    this.pageRoomsUsed.add(roomHex);
  }

  async contacts() {
    // Every contact: {key (hex), petname, x, sig (Uint8Array or null), room (hex or null), page, addedAt}.
    const tx = this.db.transaction("contacts", "readonly");
    const all = await request(tx.objectStore("contacts").getAll());
    return all.sort((a, b) => a.petname.localeCompare(b.petname) || (a.key < b.key ? -1 : 1));
  }

  saveContact(contact) {
    return this.put("contacts", contact.key, contact);
  }

  async forgetContact(keyHex) {
    const tx = this.db.transaction("contacts", "readwrite");
    tx.objectStore("contacts").delete(keyHex);
    await completed(tx);
  }

  async presenceMode() {
    const mode = await this.get("identity", "presence");
    return ["off", "on", "with-room"].includes(mode) ? mode : "off";
  }

  savePresenceMode(mode) {
    return this.put("identity", "presence", mode);
  }

  close() {
    this.db.close();
  }
}
