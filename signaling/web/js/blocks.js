// Blocks and mutes as the browser keeps them (docs/protocol.md 5.4), the twin of
// peer/blocks.py: one list in IndexedDB (the `identity` store, key `blocks`) of
// {key: 64 hex, level: "block" | "mute", label: the name it had (at most 64
// characters), since: Unix seconds}, and beside it (key `blockDevices`) the device
// keys that showed a delegation from a person in that list, [device, identity] pairs.
// Nothing here is on the wire. The list is read
// back through parseBlockList: a damaged or hand-edited entry is left out, never
// a reason not to start.

export const BLOCK = "block";
export const MUTE = "mute";
export const MAX_BLOCKS = 10000; // keys blocked or muted, at most
export const MAX_LABEL = 64;

const KEY = /^[0-9a-f]{64}$/;

export const MAX_FLOOD_MUTED = 256; // authors one room keeps muted for flooding (5.4)
export const MAX_FLOOD_NOTES = 16; // "Muted NAME for flooding" notes shown at once; past it the oldest goes

export class FloodMutes extends Set {
  // The authors a room muted for flooding (5.4), the `limit` most recently reported
  // (peer/blocks.py FloodMutes): each costs a member an envelope over the cut under a
  // key made up for it, so neither the set nor the rows drawn of it grow with them. A
  // forgotten author is shown again, still held to its rate by the flood cut.
  constructor(keys = [], limit = MAX_FLOOD_MUTED) {
    super();
    this.limit = limit;
    for (const key of keys) this.add(key);
  }

  add(key) {
    super.delete(key);
    super.add(key); // newest last
    while (this.size > (this.limit ?? MAX_FLOOD_MUTED)) super.delete(this.values().next().value);
    return this;
  }
}

export class BlockRecordError extends Error {}

export function parseBlockEntry(value) {
  // One stored entry, or a BlockRecordError; never another exception.
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BlockRecordError("a block is an object");
  }
  const { key, level, label, since } = value;
  if (typeof key !== "string" || !KEY.test(key)) throw new BlockRecordError("a blocked key is 64 lower-case hex");
  if (level !== BLOCK && level !== MUTE) throw new BlockRecordError("a block's level is block or mute");
  if (typeof label !== "string" || [...label].length > MAX_LABEL) { // code points, as Python counts
    throw new BlockRecordError(`a block's label is a string of at most ${MAX_LABEL}`);
  }
  if (!Number.isSafeInteger(since) || since < 0) throw new BlockRecordError("a block's time is a non-negative integer");
  return { key, level, label, since };
}

export function parseBlockList(value) {
  // The stored list as a Map key -> entry: at most MAX_BLOCKS, bad entries left out
  // (counted in `dropped`), a later entry of one key replacing an earlier one.
  const entries = new Map();
  let dropped = 0;
  for (const item of Array.isArray(value) ? value.slice(0, MAX_BLOCKS) : []) {
    try {
      const entry = parseBlockEntry(item);
      entries.set(entry.key, entry);
    } catch (error) {
      if (!(error instanceof BlockRecordError)) throw error;
      dropped += 1;
    }
  }
  return { entries, dropped };
}

export function parseBlockDevices(value) {
  // The devices remembered for blocked or muted people (5.4), stored as a list of
  // [device hex, identity hex]: a Map device -> identity, at most MAX_BLOCKS, bad
  // pairs left out.
  const found = new Map();
  for (const item of Array.isArray(value) ? value.slice(0, MAX_BLOCKS) : []) {
    if (!Array.isArray(item) || item.length !== 2) continue;
    const [device, identity] = item;
    if (typeof device === "string" && typeof identity === "string" && KEY.test(device) && KEY.test(identity) && device !== identity) {
      found.set(device, identity);
    }
  }
  return found;
}
