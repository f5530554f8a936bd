// The browser peer: one identity, its signaling node, and per room one
// RTCPeerConnection per link to each member, as peer/peer.py
// (docs/protocol.md 5.0). Who to connect to, and when, is decided by the
// sans-IO core in mesh.js (the twin of peer/mesh.py): node fail-over with
// backoff, who offers, glare, relinks, connect deadlines, make-before-break
// spares, membership reconciliation on every rejoin, ICE credential renewal.
// This module is the glue that carries out its commands and tells it what
// happened: node frames, link states, and signals, each verified (signed
// end to end, docs/protocol.md 5.1) before the Mesh hears of it. One timer
// for the Mesh and one per room for the messaging core, each re-armed after
// every event.
//
// A busy page's room is split into layers (docs/protocol.md 2.3): a Room is our
// seat in one, `room.layer` (from 0, as on the wire), with `room.layers` and
// `room.total` the node's estimates for the page. `room.census()` asks for a
// fresh picture, `room.move(layer)` and `room.sitWith(key)` move us, and
// `peer.join(url, {layer, friend})` sits down where asked. After every `joined`
// the room emits `seated`; an answered move also emits `moved`.
//
// Joining fast (docs/protocol.md 5.0, "Gathering" and "Connections made ahead"): a
// description goes once it holds the candidates its configuration can give, not when
// gathering completes (gathering.js); a join's first offer is made while the node
// seats us (prewarm), and the page hears of the seat once that offer has gone and,
// on a first join, once its connection is open (or failed).

import { ProtocolError, fromHex, hex } from "./bytes.js";
import { BLOCK, FloodMutes, MAX_BLOCKS, MUTE, parseBlockDevices, parseBlockList } from "./blocks.js";
import { generateIdentity, publicKeyBytes, randomBytes, requireWebCrypto, sign, verifier, verify } from "./crypto.js";
import { DEFAULT_LIFETIME_MS, MAX_BYTES as MAX_DELEGATION_BYTES, MAX_DEVICES, REVOCATION_BYTES, Devices, checkDelegation, issueDelegation, issueRevocation, parseRevocation, people, serializeDelegation, serializeRevocation } from "./device.js";
import { exportIdentity, importIdentity, keyPairFromSeed } from "./identityfile.js";
import { cardFrame } from "./friends.js";
import { MESH_DEFAULTS, Mesh } from "./mesh.js";
import { MessagingError, ReliableRoom, checkName, parseEnvelope, signedBytes } from "./messaging.js";
import { GATHER_BOUND, GATHER_SETTLE, GatherWait, earlyServers, expectedTypes, serversHint } from "./gathering.js";
import { canonicalUrl, roomKey } from "./rooms.js";
import { RELINK, ReplayGuard, parseDescription, signDescription, verifyDescription } from "./sdp.js";
import { SignalingClient, SignalingError } from "./signaling.js";
import { Store } from "./store.js";
import { takeStore } from "./early.js";
import { parseControlFrame } from "./frames.js";
import { BROWSER_ACCEPT } from "./files.js";
import { Transfers } from "./transfer.js";
import { Typing } from "./typing.js";

export const CONFIG = {
  ...MESH_DEFAULTS, // the link-management rules, read once by the Mesh (peer.mesh.config after)
  gatherTimeout: GATHER_BOUND, // the longest wait for candidates (gathering.js)
  gatherSettle: GATHER_SETTLE, // once the candidates a description needs are there, for their siblings
  holdMax: 0.05, // s: the longest the page's news of a seat waits for the offer made ahead
  holdOpen: 0.25, // s: on a first join, the longest it then waits for that offer's link to open
  relayOnly: false,
  maxFileBytes: 256 * 1024 * 1024,
  autoAccept: BROWSER_ACCEPT, // what the page takes unasked: small images, shown inline
  dmProbation: 5, // s: in a DM room, how long an unknown key has to show a delegation that admits it (7.4)
  dmProbationMax: 2, // in a DM room: keys on probation at once (more unknown keys are refused)
  earlyOffers: true, // offer to the members a first join names once signed, before `joined` (2.5.3); false: after
};
const MAX_DEVICE_CHANGES = 8; // times one member's person or device label may change in a room (5.3)
const MAX_REFUSED = 256; // keys refused in one DM room, remembered: no second probation (7.4)
const MAX_CHECKING = 64; // frames kept from a key on probation while its delegation is checked
const MAX_NAME = 64;
const MAX_NAMES = 1024; // profile names kept per room, as peer/peer.py (the core's maxNames)
const MAX_PENDING_FRAMES = 256; // one member's frames waiting for their turn (signature checks)
const JOIN_TIMEOUT = 30; // seconds for the first `joined`
const RETIRED_LINKS = 16; // closed links remembered, to say why a member was unreachable
// A control channel takes no more frames while this much is queued (docs/protocol.md
// 5.0.1): a refused frame is counted, and the messaging core sends unacknowledged
// envelopes again (resendInterval), so nothing is lost, only delayed. As peer/webrtc.py.
export const MAX_CONTROL_BUFFERED = 1 << 20;
const NODE_URL = /^wss?:\/\/[^/\s]{1,250}$/;
const KEY = /^[0-9a-f]{64}$/;
export const MAX_LAYER = 65535;
const MAX_LAYER_COUNTS = 16;

const now = () => Date.now() / 1000; // wall clock: TURN credentials expire in Unix time
const monotonic = () => performance.now() / 1000; // for waits and timings within the page

export { MessagingError, ProtocolError, SignalingError, canonicalUrl };

function iceExpiry(servers) {
  // When the first of these TURN credentials expires (`expiry:peer` usernames), or null.
  const times = [];
  for (const server of servers) {
    const head = typeof server?.username === "string" ? server.username.split(":")[0] : "";
    if (/^\d{1,15}$/.test(head)) times.push(Number(head));
  }
  return times.length ? Math.min(...times) : null;
}

function count(value) {
  // A count or a layer from the node: a safe non-negative integer, else null.
  return Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function isLayer(value) {
  return count(value) !== null && value <= MAX_LAYER;
}

export function parseCensus(reply) {
  // A `layers` answer (docs/protocol.md 3.2): numbers checked, at most 16 counts kept.
  const [layer, layers, total] = [reply.layer, reply.layers, reply.total].map(count);
  if (layer === null || layers === null || total === null) {
    throw new ProtocolError("bad-frame", "the node's layers answer is malformed");
  }
  const counts = [];
  for (const pair of (Array.isArray(reply.counts) ? reply.counts : []).slice(0, MAX_LAYER_COUNTS)) {
    if (Array.isArray(pair) && pair.length === 2 && isLayer(pair[0]) && count(pair[1]) !== null) {
      counts.push({ layer: pair[0], count: pair[1] });
    }
  }
  return { layer, layers, total, counts };
}

function nodeUrls(list) {
  // Node URLs from a node (welcome, moving): plain ws(s)://host:port strings only.
  return (Array.isArray(list) ? list : []).filter((url) => typeof url === "string" && NODE_URL.test(url));
}

async function within(promise, seconds) {
  // Wait for `promise`, at most `seconds`.
  let timer;
  const cap = new Promise((resolve) => {
    timer = setTimeout(resolve, seconds * 1000);
  });
  await Promise.race([promise, cap]);
  clearTimeout(timer);
}

function deferred() {
  const d = { done: false };
  d.promise = new Promise((resolve, reject) => {
    d.resolve = (value) => {
      d.done = true;
      resolve(value);
    };
    d.reject = (error) => {
      d.done = true;
      reject(error);
    };
  });
  d.promise.catch(() => {}); // a join nobody waits for any more must not be an unhandled rejection
  return d;
}

// --- an RTCPeerConnection, before and after the Mesh names its member ---

// What the page keeps of its node's servers between openings (gathering.js, serversHint):
// in the browser's storage, best effort (a sandboxed or storage-less context has none).
const SERVERS_HINT = "pagemesh.servers";

function recall(name) {
  try {
    return globalThis.localStorage?.getItem(name) ?? null;
  } catch {
    return null;
  }
}

function keep(name, value) {
  try {
    globalThis.localStorage?.setItem(name, value);
  } catch {
    // no storage here: the next opening gathers with no server, as a first one does
  }
}

function beginConnection(early, config) {
  // The first join's connection (Peer.open): with the servers kept from the last opening
  // if the browser takes them (storage is anyone's to write), else with none.
  try {
    const connection = new Connection(early ?? [], config);
    connection.begin(early !== null);
    return connection;
  } catch {
    const connection = new Connection([], config);
    connection.begin(true);
    return connection;
  }
}

function connectionKind(iceServers, relayOnly) {
  // Connections made with the same servers and policy are interchangeable. Credentials
  // do not count: a node mints new ones for every answer, each valid for long.
  const urls = (Array.isArray(iceServers) ? iceServers : []).map((server) => [server?.urls].flat().map(String));
  return JSON.stringify([urls, Boolean(relayOnly)]);
}

class Connection {
  // An RTCPeerConnection with its control channel, counting what its gathering gives
  // (gathering.js) from the start. A Link makes one, or takes the one its Peer made
  // ahead with its offer already set (Peer.prewarm).
  constructor(iceServers, { relayOnly, gatherSettle, gatherTimeout }) {
    const config = { iceServers };
    if (relayOnly) config.iceTransportPolicy = "relay";
    this.iceServers = iceServers;
    this.kind = connectionKind(iceServers, relayOnly);
    this.timings = { made: monotonic() }; // when each step of the negotiation happened (tests, benchmarks)
    this.gathering = new GatherWait(expectedTypes(iceServers, relayOnly), { settle: gatherSettle, bound: gatherTimeout });
    this.onGathering = () => {}; // re-checks the wait of a Link's describe(), while there is one
    this.offered = null; // the offer set ahead: a promise, settled once it is the local description
    this.prepared = null; // the offer made before the servers were known (begin, relay-only)
    this.pc = new RTCPeerConnection(config);
    this.pc.addEventListener("icecandidate", (event) => {
      if (event.candidate) this.gathering.candidate(event.candidate.type, monotonic());
      else this.gathering.complete(monotonic());
      this.onGathering();
    });
    this.pc.addEventListener("icegatheringstatechange", () => {
      if (this.pc.iceGatheringState === "complete") this.gathering.complete(monotonic());
      this.onGathering();
    });
    this.control = this.pc.createDataChannel("control", { negotiated: true, id: 0 });
  }

  begin(gather) {
    // A connection made before its node named the servers (Peer.open, 5.0 "Connections
    // made ahead"), while the page's key and its node's handshake are still on the way.
    // With `gather` (no server, or the STUN servers the node gave last time: none needs
    // a credential) and unless relay-only, set the offer and gather now, and a node that
    // hands out those servers finds the candidates there; a node that hands out others
    // gets a connection of its own (Peer.prewarm). Else (TURN last time, or relay-only):
    // make the offer (the DTLS certificate with it) and set it once the servers are
    // known (configure).
    if (gather && this.gathering.expected.has("host")) {
      this.offerAhead();
      return;
    }
    this.prepared = this.pc.createOffer();
    this.prepared.catch(() => {});
  }

  configure(iceServers, { relayOnly, gatherSettle, gatherTimeout }) {
    // The servers, before the offer is set (no gathering yet); false if the browser refuses.
    try {
      this.pc.setConfiguration({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    } catch {
      return false;
    }
    this.iceServers = iceServers;
    this.kind = connectionKind(iceServers, relayOnly);
    this.gathering = new GatherWait(expectedTypes(iceServers, relayOnly), { settle: gatherSettle, bound: gatherTimeout });
    return true;
  }

  async setOffer() {
    // Our offer as the local description: gathering starts.
    const offer = await (this.prepared ?? this.pc.createOffer());
    this.prepared = null;
    await this.pc.setLocalDescription(offer);
    this.timings.local = monotonic();
  }

  offerAhead() {
    // Set the offer now, for a member named later; a failure shows when a Link uses it.
    this.offered = this.setOffer();
    this.offered.catch(() => {});
  }

  close() {
    this.pc.close();
    this.onGathering();
  }
}

// --- one connection to one member (the Mesh's link `id`) ---

class Link {
  constructor(room, member, id, onFrame, onState, onFileChannel, connection = null) {
    this.room = room;
    this.member = member;
    this.id = id;
    this.connection = connection ?? new Connection(room.peer.iceServers, room.peer.config);
    const { pc, control, iceServers, timings, gathering } = this.connection;
    Object.assign(this, { pc, control, iceServers, timings, gathering });
    this.timings.linked = monotonic();
    this.decided = deferred(); // resolved once the Mesh heard the link open or fail (or it closed)
    this.gatherTimer = null;
    this.open = false;
    this.everOpen = false;
    this.closed = false;
    this.path = null; // 'direct' or 'relayed', once open
    this.control.onopen = () => {
      this.timings.open ??= monotonic();
      this.open = this.everOpen = true;
      onState(this);
    };
    this.control.onclose = () => {
      const was = this.open;
      this.open = false;
      if (was) onState(this);
    };
    this.control.onmessage = (event) => {
      // A bad frame is a counted drop (docs/protocol.md 5.0); a handler that throws is a
      // bug, counted and logged once, never a dead link.
      let frame;
      try {
        frame = parseControlFrame(event.data);
      } catch (error) {
        room.core.count(`drop.control_${error.code ?? "not_json"}`);
        return;
      }
      try {
        onFrame(this.member, frame);
      } catch (error) {
        room.core.count("error.frame_handler");
        if (room.core.counters["error.frame_handler"] === 1) console.error("control frame handler failed", error);
      }
    };
    this.pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(this.pc.connectionState)) {
        this.open = false;
        onState(this);
      }
    };
    this.pc.ondatachannel = (event) => onFileChannel(this, event.channel);
  }

  get failed() {
    return this.closed || ["failed", "closed"].includes(this.pc.connectionState);
  }

  get awaitingAnswer() {
    return !this.closed && this.pc.signalingState === "have-local-offer";
  }

  gathered() {
    // No trickle: the whole description, candidates included, is one signal. It goes
    // once it holds what it needs, not when gathering completes (gathering.js).
    this.gathering.start(monotonic());
    const connection = this.connection;
    return new Promise((resolve) => {
      connection.onGathering = () => {
        clearTimeout(this.gatherTimer);
        if (this.closed || this.gathering.ready(monotonic())) {
          connection.onGathering = () => {};
          resolve();
          return;
        }
        this.gatherTimer = setTimeout(() => connection.onGathering(), (this.gathering.timer() - monotonic()) * 1000);
      };
      connection.onGathering();
    });
  }

  async describe(kind) {
    await this.gathered();
    this.timings.gathered = monotonic();
    const { peer } = this.room;
    const desc = await signDescription(kind, this.pc.localDescription.sdp, this.room.key, peer.keyHex, this.member, peer.identity, now());
    this.timings.described = monotonic();
    return desc;
  }

  async offer() {
    await (this.connection.offered ?? this.connection.setOffer());
    return this.describe("offer");
  }

  async answer(desc) {
    await this.pc.setRemoteDescription({ type: "offer", sdp: desc.sdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    this.timings.local = monotonic();
    return this.describe("answer");
  }

  async acceptAnswer(desc) {
    this.timings.answered = monotonic();
    await this.pc.setRemoteDescription({ type: "answer", sdp: desc.sdp });
  }

  send(frame) {
    if (!this.open || this.closed) return false;
    if (this.control.bufferedAmount > MAX_CONTROL_BUFFERED) {
      this.room.core.count("drop.send_queue_full");
      return false;
    }
    try {
      this.control.send(JSON.stringify(frame));
      return true;
    } catch {
      this.room.core.count("error.send");
      return false;
    }
  }

  async selectedPath() {
    // 'direct' or 'relayed', from the selected candidate pair. With no relay candidate
    // in either description (no trickle: the remote one holds all of the other side's,
    // the local one all we gathered so far), no pair can be relayed, and the link's
    // open is told without a getStats() round through the browser (often 10 ms on a
    // page still drawing itself).
    const relay = / typ relay/;
    if (!relay.test(this.pc.localDescription?.sdp ?? "") && !relay.test(this.pc.remoteDescription?.sdp ?? "")) {
      return "direct";
    }
    const stats = await this.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    const types = [stats.get(pair.localCandidateId), stats.get(pair.remoteCandidateId)].map((c) => c?.candidateType);
    return types.includes("relay") ? "relayed" : "direct";
  }

  failureReason() {
    // Why a link that never opened failed, as far as this side can tell.
    const sdp = this.pc.localDescription?.sdp ?? "";
    if (/ typ relay/.test(sdp)) return "no direct path, and none through the relay either";
    const relays = this.iceServers.some((s) => [s.urls].flat().some((u) => String(u).startsWith("turn")));
    if (relays && !this.room.peer.config.relayOnly) return "no direct path, and the relay is unreachable";
    if (relays) return "the relay is unreachable";
    return "no direct path, and no relay to fall back on";
  }

  watchPath(onChange) {
    // ICE may move to a better pair after connecting (Chromium renominates: a link
    // that started relayed can go direct once a hole is punched).
    const ice = this.pc.sctp?.transport?.iceTransport;
    ice?.addEventListener("selectedcandidatepairchange", onChange);
  }

  close() {
    this.closed = true;
    this.open = false;
    this.decided.resolve();
    clearTimeout(this.gatherTimer);
    this.connection.close(); // a describe() still waiting ends now
  }
}

// --- a joined room ---

function envelopeId(env) {
  // Every field of an envelope of this room, its signature too: equal ids, equal envelopes.
  return JSON.stringify([env.author, env.seq, env.lamport, env.ts, env.kind, env.body, env.sig]);
}

export class Room {
  constructor(peer, key, url, state) {
    this.peer = peer;
    this.key = key;
    this.url = url;
    this.contact = null; // a DM room (docs/protocol.md 7.4): the contact's hex key, the only person linked
    this.dmAcked = 0; // a DM room: our highest seq the contact acknowledged (kept in IndexedDB)
    this.layer = null; // the layer we sit in (from 0), as the node last said
    this.layers = null; // the node's estimate of the room's layers
    this.total = null; // the node's estimate of the people on the page, us included
    this.moving = null; // a move on its way: resolved by its answer
    this.moveUnsent = null; // the move the next join sent for this room carries
    this.members = new Set();
    this.names = new Map();
    this.typing = new Typing(); // who is typing here, and when we last said we are
    this.paths = new Map();
    this.links = new Map(); // member -> the current link (a spare being negotiated is not here)
    this.byId = new Map(); // the Mesh's link id -> Link, spares included
    this.retired = new Map(); // the last few closed links, by id
    this.linksMade = new Map(); // member -> how many links were made to it (tests read it)
    this.seated = deferred(); // resolved by the first `joined`
    this.timings = {}; // when the last join was sent and answered (tests, benchmarks)
    this.core = new ReliableRoom(key, peer.keyHex, {}, state ?? {}, now(), [...peer.blocked]);
    this.hidden = new Map(); // blocked keys the node lists here, by layer: never members (5.4)
    this.floodMuted = new FloodMutes(); // authors muted for flooding until the page closes, the newest 256 (5.4)
    this.devices = new Devices(); // which member keys are devices of which person (5.3)
    if (peer.delegation) this.devices.add(peer.delegation);
    for (const r of peer.revocations) this.devices.revoke(r);
    this.deviceChanges = new Map(); // member -> times its person or label changed here (5.3)
    this.pendingFrames = new Map(); // member -> its frames waiting in `serial` (MAX_PENDING_FRAMES)
    for (const [r, sender] of peer.heardRevocations.revocations()) this.devices.revoke(r, sender);
    this.refusedDevices = {}; // delegations refused, by code: those members stay their own person
    this.probation = new Map(); // a DM room: unknown keys given a link to show a delegation, by deadline (ms)
    this.refused = new Set(); // a DM room: keys refused here (oldest first, at most MAX_REFUSED)
    this.held = new Map(); // links up to a key on probation: nothing of the room goes on them
    this.checking = new Map(); // a key on probation whose device frame is being checked -> frames after it
    this.probationTimer = null;
    this.chain = Promise.resolve();
    this.timer = null;
    this.saving = null;
    this.transfers = new Transfers({
      sendControl: (member, frame) => this.links.get(member)?.send(frame) ?? false,
      openChannel: (member, label) => {
        const link = this.links.get(member);
        return link?.open ? link.pc.createDataChannel(label) : null;
      },
      emit: (event) => this.emit(event),
      maxSize: peer.config.maxFileBytes,
      autoAccept: peer.config.autoAccept,
    });
  }

  emit(event) {
    this.peer.emit({ ...event, room: this });
  }

  admits(key) {
    // Anyone in a page's room; in a DM room only the contact's key, or a device key that
    // showed us a delegation from the contact or from our own identity (7.4).
    if (this.contact === null || key === this.contact) return true;
    if (key === this.peer.keyHex || key === this.peer.identityHex) return true;
    const person = this.peer.deviceIdentity(key);
    return person === this.contact || person === this.peer.identityHex;
  }

  consider(key, listed = true) {
    // Whether `key` may have a link here (7.4): a key admitted, or one on probation,
    // which an unknown key the node lists (`listed`) becomes while fewer than
    // dmProbationMax are; a signal alone puts nobody on probation.
    if (this.admits(key) || this.probation.has(key)) return true;
    if (!listed || this.refused.has(key) || this.probation.size >= this.peer.config.dmProbationMax) {
      this.peer.count("refused.stranger");
      return false;
    }
    const wait = this.peer.config.dmProbation * 1000;
    this.probation.set(key, Date.now() + wait);
    if (this.probationTimer === null) this.probationTimer = setTimeout(() => this.probationDue(), wait);
    return true;
  }

  probationDue() {
    this.probationTimer = null;
    const at = Date.now();
    for (const [key, deadline] of [...this.probation]) if (deadline <= at) this.refuse(key, false);
    if (this.probation.size) {
      const next = Math.min(...this.probation.values());
      this.probationTimer = setTimeout(() => this.probationDue(), Math.max(0, next - at));
    }
  }

  refuse(key, remember = true) {
    // A key on probation showed no delegation that admits it: its link closes and the
    // Mesh forgets it. One that showed something else stays refused in this room; one
    // that ran out of time may try again (a slow device).
    this.probation.delete(key);
    this.held.delete(key);
    this.checking.delete(key);
    if (remember) {
      this.refused.delete(key);
      this.refused.add(key);
      if (this.refused.size > MAX_REFUSED) this.refused.delete(this.refused.values().next().value);
    }
    this.peer.count("refused.stranger");
    this.peer.mesh.peerLeft(this.key, key);
    this.peer.drive();
  }

  onProbationFrame(member, frame) {
    // The first frame of a key on probation: a `device` frame whose delegation admits
    // it, or the link closes. Frames after it wait (a few) until it is checked.
    const waiting = this.checking.get(member);
    if (waiting) {
      if (waiting.push(frame) > MAX_CHECKING) this.refuse(member);
      return;
    }
    if (frame.t === "device") this.onDevice(member, frame.cert);
    this.checking.set(member, []);
    this.serial(() => {
      const later = this.checking.get(member) ?? [];
      this.checking.delete(member);
      if (!this.probation.has(member)) return; // refused meanwhile (the deadline)
      if (!this.admits(member)) return this.refuse(member);
      this.probation.delete(member);
      const link = this.held.get(member);
      this.held.delete(member);
      if (link?.open) this.upLink(member, link);
      for (const next of later) this.onFrame(member, next);
    });
  }

  waiting() {
    // A DM room: our messages the contact has not acknowledged yet, oldest first.
    return this.core.transcript().filter((env) => env.author === this.peer.keyHex && env.seq > this.dmAcked);
  }

  contactLinked() {
    return [...this.links].some(([key, link]) => link.open && this.admits(key));
  }

  dmAcks() {
    // A DM room: what the contact's keys acknowledged, kept, and told once.
    let upto = 0;
    for (const key of this.links.keys()) if (this.admits(key)) upto = Math.max(upto, this.core.acked.get(key) ?? 0);
    if (upto <= this.dmAcked) return;
    this.dmAcked = upto;
    this.peer.store.put("rooms", `dm-acked:${this.key}`, upto).catch(() => {});
    this.emit({ type: "dm-delivered", contact: this.contact, upto });
  }

  personOf(key) {
    // The identity key (hex) `key` speaks for (a device's delegation valid now, 5.3), or
    // `key` itself: a key with no delegation is its own person.
    return this.devices.personOf(key, Date.now());
  }

  people() {
    // Who is here, by person: Map identity hex -> Set of its keys here now (us included).
    return people([...this.members, this.peer.keyHex], this.devices, Date.now());
  }

  deviceLabel(key) {
    return this.devices.delegation(key, Date.now())?.label ?? null;
  }

  onRevoke(member, cert) {
    // A revocation (5.3), from whoever sends it: its identity's signature is what counts.
    this.fromMember(member, async () => {
      try {
        if (typeof cert !== "string" || cert.length !== 2 * REVOCATION_BYTES) throw new ProtocolError("revocation", "a revoke frame carries a revocation in hex");
        let data;
        try {
          data = fromHex(cert);
        } catch {
          throw new ProtocolError("revocation", "a revocation in hex");
        }
        const r = await parseRevocation(data);
        this.peer.revocationHeard(r, member); // of the device in every room (5.3)
      } catch (error) {
        const code = `revoke.${error.code ?? "error"}`;
        this.refusedDevices[code] = (this.refusedDevices[code] ?? 0) + 1;
      }
    });
  }

  onDevice(member, cert) {
    // A member's delegation (5.3), checked in turn with its envelopes (so messages after
    // it are shown under its person); refused, the member stays its own person.
    this.fromMember(member, async () => {
      try {
        if (typeof cert !== "string" || cert.length > 2 * MAX_DELEGATION_BYTES) throw new ProtocolError("short", "a device frame carries a delegation in hex");
        let data;
        try {
          data = fromHex(cert);
        } catch {
          throw new ProtocolError("short", "a delegation in hex");
        }
        const d = await checkDelegation(data, member, Date.now());
        if (this.devices.revoked(d.identity, member)) throw new ProtocolError("revoked", "the identity took this device back");
        this.countChange(member, d);
        if (this.peer.deviceSeen(member, d.identity)) return; // a blocked person's device: link closed (5.4)
        if (this.devices.add(d)) this.emit({ type: "device", key: member, identity: d.identity, label: d.label });
      } catch (error) {
        const code = error.code ?? "error";
        this.refusedDevices[code] = (this.refusedDevices[code] ?? 0) + 1;
      }
    });
  }

  countChange(member, d) {
    // A delegation that would change the person or label of `member` (one it shows valid
    // now) counts; past MAX_DEVICE_CHANGES, `changes` (as peer/peer.py Room._count_change).
    const held = this.devices.delegation(member, Date.now());
    if (!held || (held.identity === d.identity && held.label === d.label)) return;
    const changes = (this.deviceChanges.get(member) ?? 0) + 1;
    this.deviceChanges.delete(member);
    this.deviceChanges.set(member, changes);
    while (this.deviceChanges.size > MAX_DEVICES) this.deviceChanges.delete(this.deviceChanges.keys().next().value);
    if (changes > MAX_DEVICE_CHANGES) throw new ProtocolError("changes", "this member changed its person too often");
  }

  serial(task) {
    // Frames and sends run one at a time: signatures are checked asynchronously.
    const run = this.chain.then(task);
    this.chain = run.catch((error) => this.emit({ type: "problem", message: String(error) }));
    return run;
  }

  fromMember(member, task) {
    // A member's frame, in its turn: at most MAX_PENDING_FRAMES of one member's wait at
    // once. One sending faster than its signatures can be checked had the queue grow
    // without bound; past that its frames are dropped and counted (what it sends again,
    // or what the reliable core asks again, comes in a later turn).
    const pending = this.pendingFrames.get(member) ?? 0;
    if (pending >= MAX_PENDING_FRAMES) {
      this.core.count("drop.frames_pending");
      return;
    }
    this.pendingFrames.set(member, pending + 1);
    const done = () => {
      const left = (this.pendingFrames.get(member) ?? 1) - 1;
      if (left > 0) this.pendingFrames.set(member, left);
      else this.pendingFrames.delete(member);
    };
    this.serial(task).then(done, done);
  }

  // --- the application's side ---

  send(text) {
    // A `text` envelope: the text alone, as every client reads it.
    return this.signAndSend((at) => this.core.reserve(text, at));
  }

  sendChat(text, { replyTo = null } = {}) {
    // A `chat` envelope (docs/protocol.md 5.0.1): the text, our display name, and the
    // message ({author, seq}) it replies to.
    this.typing.sent();
    return this.signAndSend((at) => this.core.reserveChat(text, at, { name: this.peer.signedName(), replyTo }));
  }

  react(target, emoji, on = true) {
    // A `reaction` envelope: `emoji` on (or off) message `target` ({author, seq}).
    return this.signAndSend((at) => this.core.reserveReaction(target, emoji, at, { on, name: this.peer.signedName() }));
  }

  typed() {
    // The composer changed: tell the members we are typing, at most every few seconds.
    if (!this.typing.typed(now())) return;
    for (const link of this.links.values()) link.send({ t: "typing" });
  }

  signAndSend(reserve, replaces = null) {
    return this.serial(async () => {
      const unsigned = reserve(now());
      const env = { ...unsigned, sig: hex(await sign(this.peer.identity, signedBytes(unsigned))) };
      this.core.commit(env, now(), replaces);
      await this.save(); // a reload must never reuse this seq
      this.service();
      return env;
    });
  }

  async sendFile(file) {
    const members = [...this.links].filter(([, link]) => link.open).map(([key]) => key);
    return this.transfers.offer(file, members, this.members); // new to whoever is here now
  }

  acceptFile(id) {
    this.transfers.accept(id);
  }

  declineFile(id) {
    this.transfers.decline(id);
  }

  transcript() {
    return this.core.transcript();
  }

  // --- layers: where we sit on a busy page ---

  async census() {
    // Ask the node for the room-wide picture: {layer, layers, total, counts: [{layer, count}]}.
    const node = this.peer.node;
    if (!node) throw new SignalingError("closed", "no signaling node at the moment");
    const picture = parseCensus(await node.layers(this.key));
    this.layers = picture.layers;
    this.total = picture.total;
    return picture;
  }

  async move(layer) {
    // Sit in `layer` (from 0) instead: links to the old layer's members close, links
    // to the new one's open in the background. Resolves with the layer we sit in; a
    // full layer rejects with `layer-full` and we stay where we were.
    if (!isLayer(layer)) throw new RangeError(`a layer is in 0..${MAX_LAYER}`);
    return this.peer.move(this, layer, null);
  }

  async sitWith(friend) {
    // Move to the layer the member with public key `friend` (hex) sits in; as move().
    if (!KEY.test(friend)) throw new RangeError("a friend is a 64-digit hex public key");
    return this.peer.move(this, null, friend);
  }

  // --- links, as the Mesh says ---

  makeLink(member, id, connection = null) {
    const link = new Link(
      this,
      member,
      id,
      (from, frame) => this.onFrame(from, frame),
      (changed) => this.peer.linkChanged(this, id, changed),
      (changed, channel) => {
        if (this.admits(changed.member)) this.transfers.onChannel(changed.member, channel);
        else channel.close(); // on probation: no files (7.4)
      },
      connection,
    );
    this.byId.set(id, link);
    this.linksMade.set(member, (this.linksMade.get(member) ?? 0) + 1);
    if (!this.links.get(member)?.open) this.links.set(member, link); // a spare waits beside the open link
    return link;
  }

  link(id) {
    return this.byId.get(id) ?? this.retired.get(id) ?? null;
  }

  awaitingAnswer(member) {
    for (const link of this.byId.values()) if (link.member === member && link.awaitingAnswer) return link;
    return null;
  }

  closeLink(member, id) {
    const link = this.byId.get(id);
    if (!link) return;
    this.byId.delete(id);
    this.retired.set(id, link);
    if (this.retired.size > RETIRED_LINKS) this.retired.delete(this.retired.keys().next().value);
    if (this.links.get(member) === link) this.links.delete(member);
    link.close();
  }

  linkUp(member, id) {
    const link = this.byId.get(id);
    if (!link) return;
    this.links.set(member, link);
    if (!this.admits(member)) {
      // on probation (7.4): who we are, nothing of the room
      this.held.set(member, link);
      if (this.peer.delegation) link.send(this.peer.deviceFrame());
      return;
    }
    this.upLink(member, link);
  }

  upLink(member, link) {
    if (this.peer.delegation) link.send(this.peer.deviceFrame()); // first: who we speak for
    for (const r of this.peer.revocations) link.send(revokeFrame(r)); // devices this identity took back
    if (this.peer.name) link.send({ t: "profile", name: this.peer.name.slice(0, MAX_NAME) });
    if (this.peer.friends?.card) link.send(cardFrame(this.peer.friends.card)); // 7.1
    this.core.connected(member, now());
    this.transfers.memberConnected(member); // a spare taking over: transfers resume from the verified offset
    this.service();
    this.paths.set(member, link.path);
    this.emit({ type: "connected", key: member, path: link.path });
    link.watchPath(async () => {
      const path = await link.selectedPath();
      if (link.open && this.links.get(member) === link && path !== this.paths.get(member)) {
        link.path = path;
        this.paths.set(member, path);
        this.emit({ type: "path", key: member, path });
      }
    });
  }

  linkDown(member) {
    this.core.disconnected(member);
    this.paths.delete(member);
    this.emit({ type: "disconnected", key: member });
    this.service();
  }

  unreachable(member, id) {
    const why = this.link(id)?.failureReason() ?? "no path";
    this.emit({ type: "unreachable", key: member, message: `cannot connect to ${member.slice(0, 12)}: ${why}` });
  }

  memberJoined(member) {
    this.members.add(member);
    this.emit({ type: "member-joined", key: member });
  }

  memberLeft(member) {
    this.members.delete(member);
    if (this.typing.stopped(member, now())) this.emit({ type: "typing" });
    this.paths.delete(member);
    this.transfers.memberLeft(member);
    this.emit({ type: "member-left", key: member });
  }

  onFrame(member, frame) {
    if (typeof frame !== "object" || frame === null) return;
    if (!this.admits(member)) {
      if (this.probation.has(member)) this.onProbationFrame(member, frame);
      return;
    }
    if (frame.t === "typing") {
      if (this.members.has(member) && this.typing.heard(member, now())) this.emit({ type: "typing" });
      return;
    }
    if (frame.t === "profile") {
      // Told only when the name changes (as peer/peer.py Room._frame): the page names
      // everyone again on it, which a member repeating its name must not make it do.
      if (typeof frame.name === "string" && frame.name.length > 0 && frame.name.length <= MAX_NAME && this.names.get(member) !== frame.name) {
        this.names.delete(member);
        this.names.set(member, frame.name);
        // bounded: every key that ever linked here named itself (the least recent go)
        while (this.names.size > MAX_NAMES) this.names.delete(this.names.keys().next().value);
        this.emit({ type: "profile", key: member, name: frame.name });
      }
      return;
    }
    if (frame.t === "device") {
      this.onDevice(member, frame.cert);
      return;
    }
    if (frame.t === "revoke") {
      this.onRevoke(member, frame.cert);
      return;
    }
    if (frame.t === "card") {
      // Signed by the person the link speaks for (a device's card is its identity's, 7.1).
      this.fromMember(member, () => this.peer.friends?.onCard(this.personOf(member), frame, member));
      return;
    }
    if (this.transfers.onControl(member, frame)) return;
    this.fromMember(member, async () => {
      const checked = await this.checkEnvelopes(frame);
      if (checked) {
        this.core.receive(member, checked, now());
        this.service();
      }
    });
  }

  async checkEnvelopes(frame) {
    // The envelopes of a msg or hist frame with their signatures checked, taken as
    // peer/messaging.py's receive takes them: a hist frame of more than the core takes
    // is refused whole, unchecked; the first envelope of a bad shape, of another room or
    // with a bad signature ends the frame (those before it are taken), so a frame costs
    // at most one signature that fails. An envelope the core keeps already (delivered or
    // early), the same to the byte, was checked when it came: a frame of copies costs no
    // check (docs/protocol.md 5.0.1).
    const envs = frame.t === "msg" ? [frame.env] : frame.t === "hist" && Array.isArray(frame.envs) ? frame.envs : null;
    if (envs === null || envs.length > this.core.config.historyCount * 4) return frame; // the core counts it
    const good = [];
    const seen = new Set(); // envelopes checked in this frame (ids)
    for (const data of envs) {
      let env;
      try {
        env = parseEnvelope(data);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this.core.count("drop.malformed_envelope");
        break;
      }
      if (env.room !== this.core.room) {
        good.push(env); // the core counts it, and ends the frame there
        break;
      }
      const id = envelopeId(env);
      const kept = this.core.envelope(env) ?? this.core.authors.get(env.author)?.early.get(env.seq) ?? null;
      const known = seen.has(id) || (kept !== null && envelopeId(kept) === id);
      if (!known && !(await verify(fromHex(env.author), signedBytes(env), fromHex(env.sig)))) {
        this.core.count("drop.bad_signature");
        break;
      }
      seen.add(id);
      good.push(env);
    }
    if (!good.length) return null;
    return frame.t === "msg" ? { t: "msg", env: good[0] } : { t: "hist", envs: good };
  }

  // --- blocks and mutes (docs/protocol.md 5.4) ---

  get muted() {
    // Keys muted (stored) and muted here for flooding.
    return new Set([...this.peer.muted, ...this.floodMuted]);
  }

  shows(key) {
    // Whether this room shows `key`'s messages.
    const peer = this.peer;
    return !peer.blocked.has(key) && !peer.muted.has(key) && !this.floodMuted.has(key);
  }

  personToBlock(key) {
    // A block or mute is of a person (5.4): the identity a device showed, or the key.
    const person = this.peer.personBlocked(key) ?? this.personOf(key);
    if (person === this.peer.identityHex) throw new RangeError("one cannot block oneself");
    return person;
  }

  block(key) {
    return this.peer.block(this.personToBlock(key), this.names.get(key) ?? this.core.nameOf(key) ?? "");
  }

  unblock(key) {
    return this.peer.unblock(key);
  }

  mute(key) {
    return this.peer.mute(this.personToBlock(key), this.names.get(key) ?? this.core.nameOf(key) ?? "");
  }

  async unmute(key) {
    const flooding = this.floodMuted.delete(key);
    return (await this.peer.unmute(key)) || flooding;
  }

  // --- the messaging core ---

  service() {
    for (const [member, frame] of this.core.framesToSend()) this.links.get(member)?.send(frame);
    let changed = false;
    for (const event of this.core.takeEvents()) {
      changed = true;
      if (event.type === "reissue") {
        // our key moved here from a device that had said more: say ours again
        for (const old of event.envs) this.signAndSend((at) => this.core.reserve(old.body, at, old.kind, old.seq), old.seq);
      } else if (event.type === "delivered") {
        if (this.typing.stopped(event.env.author, now())) this.emit({ type: "typing" });
        const mine = event.env.author === this.peer.keyHex;
        if (!mine && !this.shows(event.env.author)) continue; // received, kept, acknowledged; not shown
        this.emit({ type: "message", env: event.env, content: event.content, mine, replaces: event.replaces });
      } else if (event.type === "flooding") {
        this.floodMuted.add(event.author); // until the page closes or an unmute (5.4)
        this.emit(event);
      } else {
        this.emit(event);
      }
    }
    if (changed) this.saveSoon();
    if (this.contact !== null) this.dmAcks();
    clearTimeout(this.timer);
    const deadline = this.core.timer();
    if (deadline !== null) {
      this.timer = setTimeout(() => {
        this.core.handleTimer(now());
        this.service();
      }, Math.max(0, (deadline - now()) * 1000));
    }
  }

  saveSoon() {
    if (this.saving) return;
    this.saving = setTimeout(() => {
      this.saving = null;
      this.save();
    }, 100);
  }

  save() {
    return this.peer.store.saveRoomState(this.key, this.core.state(), { page: this.contact === null });
  }

  close() {
    clearTimeout(this.timer);
    clearTimeout(this.probationTimer);
    this.transfers.close();
    for (const link of this.byId.values()) link.close();
    this.byId.clear();
    this.links.clear();
  }
}

// --- the identity and its node ---

const MAX_OWN_REVOCATIONS = 16; // a person has a few devices

function revokeFrame(r) {
  return { t: "revoke", cert: hex(serializeRevocation(r)) };
}

export class Peer {
  static async open(nodes, { name = null, config = {}, dbName, device = null } = {}) {
    requireWebCrypto();
    // the first join's connection, begun while the key and the node's handshake come
    const blank = beginConnection(earlyServers(recall(SERVERS_HINT)), { ...CONFIG, ...config });
    // the default database may be opening already (early.js: since before this module ran)
    const store = await ((dbName === undefined && takeStore()) || Store.open(dbName));
    let identity = await store.identity();
    if (!identity) {
      // From a kept seed, so the key can be exported (docs/identity.md); the private
      // key itself stays non-extractable.
      const seed = randomBytes(32);
      identity = await keyPairFromSeed(seed);
      await store.saveIdentity(identity, seed);
    }
    let signer = identity;
    if (device !== null) {
      // A device of this identity (docs/protocol.md 5.3): a key of this browser's own, not
      // extractable, certified by the identity key; it is what joins, signs and links.
      signer = await store.get("identity", "device");
      if (!signer) {
        signer = await generateIdentity();
        await store.put("identity", "device", signer);
      }
    }
    const peer = new Peer(store, signer, await publicKeyBytes(signer), nodes, { ...CONFIG, ...config });
    peer.blank = blank;
    peer.identityHex = hex(await publicKeyBytes(identity));
    for (const text of (await store.get("identity", "revoked")) ?? []) {
      // the revocations this identity issued (5.3); anything else kept there is skipped
      const r = await parseRevocation(fromHex(text)).catch(() => null);
      if (r && r.identity === peer.identityHex) peer.revocations.push(r);
    }
    if (device !== null) {
      peer.person = identity;
      peer.deviceLabel = String(device);
      // a delegation issued elsewhere and adopted here (the identity key stays there)
      const adopted = await store.get("identity", "deviceCert");
      const given = adopted ? await checkDelegation(fromHex(adopted), peer.keyHex, Date.now()).catch(() => null) : null;
      if (given && given.identity !== peer.identityHex) {
        [peer.delegation, peer.identityHex, peer.person, peer.deviceLabel] = [given, given.identity, null, given.label];
      } else {
        await peer.issueDelegation();
      }
    }
    peer.exportable = (await store.seed()) !== null;
    peer.name = name ?? (await store.name());
    peer.blockDevices = parseBlockDevices(await store.get("identity", "blockDevices"));
    peer.useBlocks(parseBlockList(await store.blocks()).entries);
    if (name !== null) await store.saveName(name);
    return peer;
  }

  constructor(store, identity, publicKey, nodes, config, rng = Math.random) {
    this.store = store;
    this.identity = identity;
    this.publicKey = publicKey;
    this.keyHex = hex(publicKey);
    this.config = config;
    const meshConfig = Object.fromEntries(Object.keys(MESH_DEFAULTS).map((name) => [name, config[name]]));
    this.mesh = new Mesh(this.keyHex, [...nodes], meshConfig, rng, now());
    this.rooms = new Map();
    this.node = null; // the SignalingClient the Mesh chose, while connected
    this.nodeUrl = null; // the URL the Mesh knows it by
    this.iceServers = []; // the freshest STUN/TURN servers: new links use them
    this.iceServersFrom = null; // the SignalingClient they came from
    this.warm = null; // a Connection made ahead, its offer set (prewarm)
    this.blank = null; // a Connection made at open, before its node named the servers (Connection.begin)
    this.warming = null; // the seat it is made for, until that seat ends
    this.held = null; // the Mesh's notices for the application, while a seat holds them
    this.holds = 0;
    this.urgent = null; // while a seat drives the Mesh: the sends of offers ready to go
    this.offers = new Map(); // "room:member" -> a verified offer, for the Mesh's Answer (same turn)
    this.replays = new ReplayGuard();
    this.signals = Promise.resolve(); // signals are verified one at a time, in order
    this.counters = {}; // signals refused before the Mesh heard of them, by reason
    this.listeners = new Set();
    this.timer = null;
    this.closing = false;
    this.tooOld = null; // what a node that found this page too old said, until one serves it
    this.connected = deferred();
    this.identityHex = this.keyHex; // the person's key: another only for a device (5.3)
    this.person = null; // the identity key pair, when this peer speaks as one of its devices
    this.delegation = null;
    this.renewal = null;
    this.revocations = []; // devices this identity took back, shown on every link (5.3)
    this.heardRevocations = new Devices(); // members showed us, in any room: hold in every room (5.3)
    this.blockDevices = new Map(); // device hex -> a blocked or muted identity it showed (5.4)
    this.useBlocks(new Map()); // keys blocked or muted (blocks.js), as stored (5.4)
  }

  async revokeDevice(device) {
    // Take back every delegation this identity gave `device` (hex): a lost or stolen
    // device (5.3). Kept in IndexedDB and shown now on every link, and on every link after.
    if (this.delegation && !this.person) throw new Error("this device does not hold its identity's key: revoke from one that does");
    const r = await issueRevocation(this.person ?? this.identity, fromHex(this.identityHex), fromHex(device, 32), Date.now());
    this.revocations = [...this.revocations.filter((old) => old.device !== device), r].slice(-MAX_OWN_REVOCATIONS);
    await this.store.put("identity", "revoked", this.revocations.map((old) => hex(serializeRevocation(old))));
    for (const room of this.rooms.values()) {
      if (room.devices.revoke(r)) room.emit({ type: "revoked", key: device, identity: this.identityHex });
      for (const link of room.links.values()) if (link.open) link.send(revokeFrame(r));
    }
    return r;
  }

  async adoptDelegation(text) {
    // Speak, from the next page load, as a device of the identity that issued `text` (a
    // delegation file's hex, `pagemesh identity delegate`): checked to name this browser's
    // device key and to be valid now. Returns the identity's key (hex).
    if (!this.delegation) throw new Error("open the page as a device (?device=LABEL) to adopt a delegation");
    const data = fromHex(String(text).trim().slice(0, 2 * MAX_DELEGATION_BYTES));
    const d = await checkDelegation(data, this.keyHex, Date.now());
    await this.store.put("identity", "deviceCert", hex(data));
    return d.identity;
  }

  async issueDelegation() {
    // A fresh delegation from the identity key to our device key, valid from now (5.3).
    const lifetime = this.config.deviceLifetimeMs ?? DEFAULT_LIFETIME_MS;
    this.delegation = await issueDelegation(this.person, fromHex(this.identityHex), this.publicKey, Date.now(), lifetime, this.deviceLabel);
    clearTimeout(this.renewal);
    this.renewal = setTimeout(() => this.renewDelegation(), lifetime / 2);
  }

  async renewDelegation() {
    // At half its life: a new delegation, shown to every member linked now.
    if (this.closing) return;
    await this.issueDelegation();
    for (const room of this.rooms.values()) {
      room.devices.add(this.delegation);
      for (const link of room.links.values()) if (link.open) link.send(this.deviceFrame());
    }
  }

  deviceFrame() {
    return { t: "device", cert: hex(serializeDelegation(this.delegation)) };
  }

  get nodes() {
    // The nodes this peer knows, in the order it would try them.
    return [...this.mesh.nodes];
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event) {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        console.error(error);
      }
    }
  }

  count(name) {
    this.counters[name] = (this.counters[name] ?? 0) + 1;
  }

  signedName() {
    // Our name as chat and reaction envelopes carry it, or null if it is not a valid one.
    try {
      return this.name ? checkName(this.name) : null;
    } catch {
      return null;
    }
  }

  async exportIdentity(passphrase) {
    // The text of an identity file for this key and name; a key made before seeds
    // were kept cannot be exported (WebCrypto never reveals it).
    const seed = await this.store.seed();
    if (!seed) throw new Error("this key was made before keys could be exported; it cannot leave this browser");
    const contacts = (await this.store.contacts()).map((c) => ({
      key: fromHex(c.key, 32), petname: c.petname, x: c.x, sig: c.sig,
      room: c.room ? fromHex(c.room, 20) : null, page: c.room ? c.page : null,
    }));
    return exportIdentity(seed, passphrase, this.name || null, { contacts });
  }

  async importIdentity(text, passphrase) {
    // Make the key in an identity file this browser's (the caller reloads the page):
    // the old key, its seed and its rooms' state are replaced. Returns the public key.
    const imported = await importIdentity(text, passphrase);
    await this.store.replaceIdentity(await keyPairFromSeed(imported.seed), imported.seed);
    if (imported.name) await this.store.saveName(imported.name.slice(0, MAX_NAME));
    for (const c of imported.contacts ?? []) {
      await this.store.saveContact({
        key: hex(c.key), petname: c.petname, x: c.x, sig: c.sig,
        room: c.room ? hex(c.room) : null, page: c.page, addedAt: Math.floor(Date.now() / 1000),
      });
    }
    return imported.publicKey;
  }

  async setName(name) {
    this.name = name.slice(0, MAX_NAME);
    await this.store.saveName(this.name);
    for (const room of this.rooms.values()) {
      for (const link of room.links.values()) link.send({ t: "profile", name: this.name });
    }
  }

  // --- the Mesh: feed it, carry out what it says ---

  start() {
    // Resolves once a node has welcomed us (the Mesh keeps trying until one does).
    this.mesh.start(now());
    this.drive();
    return this.connected.promise;
  }

  drive() {
    for (const command of this.mesh.commands()) {
      try {
        this.carryOut(command);
      } catch (error) {
        console.error("pagemesh: carrying out", command, error); // one failed command must not stop the others
      }
    }
    if (this.closing) return;
    clearTimeout(this.timer);
    this.timer = null;
    const deadline = this.mesh.getTimer();
    if (deadline !== null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.mesh.handleTimer(now());
        this.drive();
      }, Math.max(0, (deadline - now()) * 1000));
    }
  }

  spawn(task, what) {
    // An asynchronous part of a command; a failure is shown, never thrown at the Mesh.
    task.catch((error) => this.emit({ type: "problem", message: `${what}: ${error.message ?? error}` }));
  }

  carryOut(command) {
    switch (command.type) {
      case "connect-node":
        return this.spawn(this.connect(command.url), `cannot reach ${command.url}`);
      case "join-room": {
        const room = this.rooms.get(command.room);
        const move = room?.moveUnsent ?? null; // this join carries the move asked last
        if (room) room.moveUnsent = null;
        return this.spawn(this.seat(command.room, command.layer, command.friend, move), "join failed");
      }
      case "request-ice-servers":
        return this.spawn(this.renewIceServers(), "cannot renew ICE servers");
      case "offer":
      case "answer":
      case "send-relink":
      case "close-link":
        return this.linkCommand(command);
      default: {
        const early = command.room !== undefined ? this.rooms.get(command.room)?.earlyNotices : null;
        if (early && early.length < 4 * this.mesh.config.maxMembers) return early.push(command); // until seated
        return this.held !== null ? this.held.push(command) : this.tell(command);
      }
    }
  }

  linkCommand(command) {
    const room = this.rooms.get(command.room);
    if (!room) return;
    const { member } = command;
    const who = member.slice(0, 12);
    if (command.type === "offer") {
      const warm = this.takeWarm();
      const link = room.makeLink(member, command.link, warm);
      const sent = this.sendOffer(room, link);
      this.spawn(sent, `cannot offer to ${who}`);
      const offered = { sent, decided: link.decided.promise };
      if (this.urgent) {
        if (warm !== null) this.urgent.push(offered);
      } else if (room.earlyLinks?.length === 0) room.earlyLinks.push(offered); // a join's first, before its seat (2.5.3)
    } else if (command.type === "answer") {
      const slot = `${room.key}:${member}`;
      const offer = this.offers.get(slot);
      this.offers.delete(slot);
      if (offer) {
        const link = room.makeLink(member, command.link);
        this.spawn(this.sendAnswer(room, link, offer), `cannot answer ${who}`);
      }
    } else if (command.type === "send-relink") {
      this.spawn(this.sendRelink(room, member), `cannot ask ${who} to offer`);
    } else {
      room.closeLink(member, command.link);
    }
  }

  tell(notice) {
    // What the Mesh has the application learn.
    if (notice.type === "node-status") return this.nodeStatus(notice);
    const room = this.rooms.get(notice.room);
    if (!room) return;
    if (notice.type === "member-joined") room.memberJoined(notice.member);
    else if (notice.type === "member-left") room.memberLeft(notice.member);
    else if (notice.type === "link-up") room.linkUp(notice.member, notice.link);
    else if (notice.type === "link-down") room.linkDown(notice.member);
    else if (notice.type === "unreachable") room.unreachable(notice.member, notice.link);
    // "refused": counted in mesh.counters; a stranger's noise is not the application's business
  }

  nodeStatus({ state, url, wait }) {
    if (state === "returning") return; // a chosen node tried while this one still serves
    if (state === "connecting") {
      this.emit({ type: "status", state, node: url });
    } else if (state === "connected") {
      this.tooOld = null;
      this.connected.resolve();
      this.emit({ type: "status", state, node: this.node?.nodeUrl || url, nodes: this.nodes });
    } else if (state === "lost") {
      this.emit({ type: "status", state, node: url, message: `lost the node ${url}; trying others` });
    } else if (state === "retrying") {
      const message = this.tooOld ?? "no signaling node reachable; retrying";
      this.emit({ type: "status", state, in: wait, message });
    } else if (state === "replaced") {
      const message = "this identity connected from another tab";
      this.emit({ type: "status", state, node: url, message });
      for (const room of this.rooms.values()) {
        if (!room.seated.done) room.seated.reject(new SignalingError("replaced", message));
      }
    }
  }

  // --- the signaling node ---

  async connect(url) {
    let client;
    try {
      client = await SignalingClient.connect(url, this.identity, this.publicKey, this.name);
    } catch (error) {
      if (this.closing) return;
      if (error.code === "too-old") {
        // Only a newer page helps (docs/protocol.md 3.1); other nodes are still tried,
        // and the page keeps saying why until one of them serves it.
        this.tooOld = `This page is out of date: ${error.detail}. Reload the page.`;
        this.emit({ type: "status", state: "too-old", node: url, message: this.tooOld });
      } else if (this.mesh.returning !== url) {
        // (a chosen node tried again while another serves: no news for the page)
        this.emit({ type: "status", state: "unreachable", node: url, message: error.message });
      }
      this.mesh.nodeFailed(url, now());
      this.drive();
      return;
    }
    if (this.closing || !this.mesh.wants(url)) {
      client.close(); // closed, or the Mesh moved on meanwhile
      return;
    }
    this.node?.close();
    this.node = client;
    this.nodeUrl = url;
    client.onevent = (frame) => this.onNodeFrame(client, url, frame);
    if (this.blank && this.rooms.size > 0 && Array.isArray(client.iceServers)) {
      // A join follows: its connection gathers from now, with the servers the welcome gave.
      this.iceFor(client);
      try {
        this.prewarm(this.iceServers);
      } catch {
        // servers the browser refuses: the join's offer makes its own connection and says why
      }
    }
    this.mesh.nodeConnected(url, nodeUrls(client.nodes), now());
    this.drive();
  }

  async seat(key, layer, friend, move) {
    // Join (or rejoin, or move: `move` is then its deferred) a room at the current
    // node; the Mesh reconciles the members.
    const room = this.rooms.get(key);
    const node = this.node;
    if (!room || !node) {
      if (move && !move.done) move.reject(new SignalingError("closed", "no signaling node at the moment"));
      return;
    }
    // A newcomer (a first join, a move) offers to every member `joined` lists: the first
    // of those connections is made while the node seats us (prewarm).
    const warming = !room.seated.done || move ? this.warmUp(node) : null;
    try {
      await this.seatAt(room, node, layer, friend, move);
    } finally {
      if (warming !== null && this.warming === warming) this.coolDown();
    }
  }

  async seatAt(room, node, layer, friend, move) {
    // seat() at `node`, the room and node checked.
    const key = room.key;
    let joined;
    room.timings = { joining: monotonic() };
    try {
      joined = await node.join(key, layer, friend);
    } catch (error) {
      for (const notice of this.takeEarly(room)) this.tell(notice);
      if (this.node !== node && !move) return; // a node left meanwhile: the current one seats us
      this.joinRefused(room, error, move);
      return;
    }
    room.timings.joined = monotonic();
    const early = this.takeEarly(room); // what named members did before the seat (2.5.3)
    if (this.rooms.get(key) !== room || this.node !== node || !isLayer(joined.layer)) {
      for (const notice of early) this.tell(notice);
      if (this.rooms.get(key) === room && this.node === node) room.emit({ type: "problem", message: "the node seated us in no layer" });
      return; // left, or moved on: the next join seats it
    }
    const first = !room.seated.done;
    room.layer = joined.layer;
    room.layers = count(joined.layers) ?? 1; // as Python reads an absent field; shown as at least our group
    room.total = count(joined.total);
    this.iceServers = Array.isArray(joined.ice_servers) ? joined.ice_servers : [];
    this.iceServersFrom = node;
    const listed = Array.isArray(joined.members) ? joined.members : [];
    this.learnNodes(listed.map((m) => m?.url));
    const keys = listed.map((m) => m?.key).filter((k) => KEY.test(k));
    room.hidden = new Map(keys.filter((k) => this.blocked.has(k)).map((k) => [k, joined.layer]));
    const members = keys.filter((k) => !this.blocked.has(k)); // a blocked key is never a member (5.4)
    for (let i = members.length - 1; i >= 0; i--) {
      if (!room.consider(members[i])) members.splice(i, 1); // a DM room: not the contact (7.4)
    }
    // their answers' signatures are checked soon: import their keys meanwhile
    for (const member of members.slice(0, this.mesh.config.maxMembers)) verifier(fromHex(member));
    this.hold();
    this.held.push(...early);
    try {
      this.mesh.joined(key, joined.layer, members, iceExpiry(this.iceServers), now());
      await this.offersFirst(first, room);
      if (this.rooms.get(key) !== room) return;
      const seat = { layer: room.layer, layers: room.layers, total: room.total };
      if (first) room.seated.resolve(joined);
      else if (move && !move.done) {
        move.resolve(joined);
        room.emit({ type: "moved", ...seat });
      } else room.emit({ type: "rejoined", node: node.nodeUrl, layer: joined.layer });
      room.emit({ type: "seated", ...seat });
    } finally {
      this.release();
    }
  }

  // --- the network first, the page after ---

  hold() {
    // The Mesh's notices wait (in order) until release(): see offersFirst().
    this.holds += 1;
    this.held ??= [];
  }

  release() {
    this.holds -= 1;
    if (this.holds > 0) return;
    const held = this.held ?? [];
    this.held = null;
    for (const notice of held) {
      try {
        this.tell(notice);
      } catch (error) {
        console.error("pagemesh: telling", notice, error);
      }
    }
  }

  async offersFirst(first, room) {
    // Drive the Mesh after a seat, and let the offer it starts on the connection made
    // ahead go before the page hears of the seat: it needs only its signature (one
    // WebCrypto call, a task away) and what its gathering still lacks, and would
    // otherwise wait behind the page drawing the room, 20 to 100 ms of main thread.
    // At most `holdMax`. On a first join, then until that link is open or failed, at
    // most `holdOpen`: a fresh page's first drawing of the room (its first layout, 20
    // to 30 ms of main thread) would otherwise fall on the answer and the handshakes,
    // which wait for this thread at every step and share the machine's cores with it.
    // The page then hears of the seat and of the open link together. A join whose
    // members were named before its seat (2.5.3) offered its first link then: the
    // same hold waits for that one.
    const urgent = (this.urgent = []);
    try {
      this.drive();
    } finally {
      this.urgent = null;
    }
    const early = room.earlyLinks ?? [];
    room.earlyLinks = null;
    if (!urgent.length && !early.length) return;
    await within(Promise.allSettled(urgent.map((u) => u.sent)), this.config.holdMax);
    if (first) await within(Promise.all([...early, ...urgent].map((u) => u.decided)), this.config.holdOpen);
  }

  // --- connections made ahead ---

  warmUp(node) {
    // A seat is asked for: prepare the connection its first offer will take, with the
    // servers this node hands out: from its welcome at once, else asked for beside the
    // join, whose answer takes longer (it reads the DHT). Returns the seat's token.
    const token = {};
    this.warming = token;
    const known = this.iceFor(node);
    if (this.iceServersFrom === node) {
      this.prewarm(this.iceServers);
    } else {
      known.then(() => {
        if (this.warming === token && this.iceServersFrom === node) this.prewarm(this.iceServers);
      }); // else no connection ahead: the offer makes its own
    }
    return token;
  }

  prewarm(servers) {
    // One connection made ahead (docs/protocol.md 5.0, "Gathering"): its offer set and
    // its candidates gathering while the node seats us, so the offer the seat asks for
    // goes as soon as the member is named. At most one, kept until its seat ends.
    if (this.closing) return;
    if (this.warm?.kind === connectionKind(servers, this.config.relayOnly)) return;
    this.warm?.close();
    const blank = this.blank;
    this.blank = null;
    if (blank?.offered && blank.kind === connectionKind(servers, this.config.relayOnly)) {
      this.warm = blank; // gathering since the page opened, with these servers (or none)
      return;
    }
    if (!blank?.offered && blank?.configure(servers, this.config)) {
      this.warm = blank;
    } else {
      blank?.close();
      this.warm = new Connection(servers, this.config);
    }
    this.warm.offerAhead();
  }

  takeWarm() {
    // For an offer: the connection made ahead, if it is what a new one would be now.
    const warm = this.warm;
    this.warm = null;
    if (warm?.kind === connectionKind(this.iceServers, this.config.relayOnly)) return warm;
    warm?.close();
    return null;
  }

  coolDown() {
    // The seat ended and no offer took the connection made for it (nobody to offer to,
    // or the join failed): close it, its ports and any relay allocation with it.
    this.warming = null;
    this.warm?.close();
    this.warm = null;
  }

  joinRefused(room, error, move) {
    // A first join fails join(); a refused move fails move() and the Mesh asks for the
    // old seat again; a refused rejoin is told (docs/protocol.md 3.5).
    if (!room.seated.done) {
      room.seated.reject(error);
      return;
    }
    if (this.rooms.get(room.key) !== room) return;
    if (move && !move.done) move.reject(error);
    else if (!move) room.emit({ type: "problem", message: `rejoin failed: ${error.message}` });
    this.mesh.joinRefused(room.key, error.code === "layer-full");
    this.drive();
  }

  async move(room, layer, friend) {
    // Room.move and Room.sitWith: a join while seated (docs/protocol.md 3.2).
    if (this.rooms.get(room.key) !== room) throw new SignalingError("not-in-room", "this room was left");
    if (room.moving && !room.moving.done) throw new SignalingError("busy", "a move is on its way already");
    const moving = deferred();
    room.moving = room.moveUnsent = moving;
    const timer = setTimeout(() => {
      if (!moving.done) moving.reject(new SignalingError("timeout", "the node did not answer the move"));
    }, JOIN_TIMEOUT * 1000);
    this.mesh.move(room.key, layer, friend);
    this.drive();
    try {
      return (await moving.promise).layer;
    } finally {
      clearTimeout(timer);
    }
  }

  async renewIceServers() {
    const node = this.node;
    if (!node) return;
    const reply = await node.request({ type: "ice-servers" });
    this.useIceServers(Array.isArray(reply.servers) ? reply.servers : [], node);
    this.drive();
  }

  learnNodes(urls) {
    // A member's home node is a live node too: one more place to go if ours fails
    // (the directory in `welcome` may not name it yet). The Mesh's own rule for
    // learned nodes (deduplicated, at most 64), which peer/mesh.py keeps private.
    this.mesh.learnNodes(nodeUrls(urls));
  }

  signal(to, payload, room) {
    if (!this.node) return; // the Mesh tries again once a node is back
    try {
      this.node.signal(to, payload, room);
    } catch (error) {
      this.emit({ type: "problem", message: `cannot signal ${to.slice(0, 12)}: ${error.message}` });
    }
  }

  // --- rooms ---

  async join(pageUrl, { scope = "page", layer = null, friend = null } = {}) {
    // Join the room of a page; links to its members are set up in the background.
    // `layer` (from 0) asks for that layer, else `friend` (a member's hex key) for the
    // layer that member sits in; a full layer rejects with `layer-full`, a friend not
    // in the room with `unknown-peer`. A room joined already is returned as it is.
    if (layer !== null && !isLayer(layer)) throw new RangeError(`a layer is in 0..${MAX_LAYER}`);
    if (friend !== null && !KEY.test(friend)) throw new RangeError("a friend is a 64-digit hex public key");
    const canonical = canonicalUrl(pageUrl, scope);
    const key = hex(await roomKey(canonical));
    let room = this.rooms.get(key);
    if (!room) {
      const state = await this.store.roomState(key);
      room = this.rooms.get(key);
      if (!room) {
        room = new Room(this, key, canonical, state);
        this.rooms.set(key, room);
        this.mesh.join(key, layer, friend);
        this.start();
      }
    }
    return this.untilSeated(key, room);
  }

  revocationHeard(r, sender) {
    // A member showed a revocation in one room (5.3): it holds in every room we are in,
    // and in those we open later; a device it takes away is its own person there.
    this.heardRevocations.revoke(r, sender);
    for (const room of this.rooms.values()) {
      if (room.devices.revoke(r, sender)) room.emit({ type: "revoked", key: r.device, identity: r.identity });
    }
  }

  deviceIdentity(key) {
    // The person a member key is a checked device of, in any room we are in.
    for (const room of this.rooms.values()) {
      const person = room.personOf(key);
      if (person !== key) return person;
    }
    return null;
  }

  async joinDm(contactHex, keyHex) {
    // Join the DM room `keyHex` (dmRoom of the pair secret) with `contactHex`, whose
    // keys alone get a link there (docs/protocol.md 7.4); dm.js decides when.
    let room = this.rooms.get(keyHex);
    if (!room) {
      const state = await this.store.roomState(keyHex);
      const acked = await this.store.get("rooms", `dm-acked:${keyHex}`);
      room = this.rooms.get(keyHex);
      if (!room) {
        room = new Room(this, keyHex, null, state);
        room.contact = contactHex;
        room.dmAcked = Number.isSafeInteger(acked) ? acked : 0;
        this.rooms.set(keyHex, room);
        this.mesh.join(keyHex, null, null);
        this.start();
      }
    }
    return this.untilSeated(keyHex, room);
  }

  async untilSeated(key, room) {
    // `room` once a node seated us in it; left again, and the error thrown, after
    // JOIN_TIMEOUT without a seat.
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new SignalingError("timeout", "no node seated us in the room")), JOIN_TIMEOUT * 1000);
    });
    try {
      await Promise.race([room.seated.promise, timeout]);
    } catch (error) {
      if (this.rooms.get(key) === room) await this.leave(room);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return room;
  }

  async leave(room) {
    if (this.rooms.get(room.key) === room) this.rooms.delete(room.key);
    this.mesh.leave(room.key);
    this.drive(); // its links' CloseLinks find no room: room.close() closes them all
    room.close();
    try {
      await this.node?.leave(room.key);
    } catch {
      // the node may be gone; our presence lapses on its own
    }
  }

  // --- blocks and mutes (docs/protocol.md 5.4) ---

  useBlocks(entries) {
    // Blocks and mutes as stored, and the two sets every frame and message is checked
    // against: the keys stored and the devices remembered for them (a person, 5.4).
    this.blocks = entries;
    for (const [device, identity] of this.blockDevices) {
      if (!entries.has(identity) || device === this.keyHex || device === this.identityHex) this.blockDevices.delete(device);
    }
    const at = (level) => {
      const keys = new Set([...entries.values()].filter((e) => e.level === level).map((e) => e.key));
      for (const [device, identity] of this.blockDevices) if (keys.has(identity)) keys.add(device);
      return keys;
    };
    this.blocked = at(BLOCK);
    this.muted = at(MUTE);
  }

  async saveBlocks() {
    this.useBlocks(this.blocks);
    await this.store.saveBlocks([...this.blocks.values()]);
    await this.store.put("identity", "blockDevices", [...this.blockDevices]);
  }

  personBlocked(key) {
    // The stored entry that catches `key` (itself, or the person it is a remembered
    // device of), or null.
    if (this.blocks.has(key)) return key;
    return this.blockDevices.get(key) ?? null;
  }

  devicesOf(identity) {
    // The keys that showed us a valid delegation from `identity`, in any room.
    const found = new Set();
    for (const room of this.rooms.values()) {
      for (const key of [...room.members, ...room.links.keys(), ...room.hidden.keys()]) {
        if (key !== identity && key !== this.keyHex && room.personOf(key) === identity) found.add(key);
      }
    }
    return found;
  }

  devicesBlockedWith(identity) {
    // The device keys caught with the person `identity` (remembered).
    return [...this.blockDevices].filter(([, i]) => i === identity).map(([d]) => d);
  }

  remember(identity, devices) {
    for (const device of devices) {
      this.blockDevices.delete(device);
      this.blockDevices.set(device, identity);
      // bounded: the oldest goes (caught again if it shows its delegation again)
      while (this.blockDevices.size > MAX_BLOCKS) this.blockDevices.delete(this.blockDevices.keys().next().value);
    }
  }

  async setBlock(key, level, label) {
    if (key === this.keyHex || key === this.identityHex) throw new RangeError("one cannot block oneself");
    if (!this.blocks.has(key) && this.blocks.size >= MAX_BLOCKS) throw new RangeError("too many keys blocked or muted");
    const entry = { key, level, label: String(label ?? "").slice(0, 64), since: Math.floor(Date.now() / 1000) };
    this.blocks.delete(key);
    this.blocks.set(key, entry);
    this.remember(key, this.devicesOf(key));
    await this.saveBlocks();
  }

  closeBlocked(keys) {
    // Keys just blocked: their links close, the Mesh forgets them as members, the
    // messaging cores stop delivering them.
    for (const room of this.rooms.values()) {
      for (const key of keys) {
        room.core.block(key);
        room.floodMuted.delete(key);
        if (this.mesh.rooms.get(room.key)?.members.has(key)) {
          this.hide(room.key, key, room.layer);
          this.mesh.peerLeft(room.key, key);
        }
      }
      room.service();
    }
    this.drive();
  }

  async block(key, label = "") {
    // Block `key` everywhere, stored: its links close, the Mesh forgets it as a member,
    // the messaging cores stop delivering it. Nothing is sent to it. `key` is a person:
    // every device that showed us a delegation from it, now or later, is blocked with it.
    await this.setBlock(key, BLOCK, label);
    this.closeBlocked([key, ...this.devicesBlockedWith(key)]);
  }

  forgetDevices(key) {
    // Forget the devices remembered for `key`; the keys it caught.
    const caught = [key, ...this.devicesBlockedWith(key)];
    for (const device of caught) this.blockDevices.delete(device);
    return caught;
  }

  async unblock(key) {
    // Undo block (of `key`, or of the person `key` is a remembered device of): its keys
    // are members again where the node lists them.
    key = this.personBlocked(key) ?? key;
    if (this.blocks.get(key)?.level !== BLOCK) return false;
    this.blocks.delete(key);
    const caught = this.forgetDevices(key);
    await this.saveBlocks();
    for (const room of this.rooms.values()) {
      for (const each of caught) {
        room.core.unblock(each);
        if (room.hidden.has(each)) {
          this.mesh.peerJoined(room.key, each, now(), room.hidden.get(each));
          room.hidden.delete(each);
        }
      }
    }
    this.drive();
    return true;
  }

  async mute(key, label = "") {
    // Mute `key` everywhere, stored (a block of it becomes a mute); a person, as block.
    if (this.blocked.has(key)) await this.unblock(key);
    await this.setBlock(key, MUTE, label);
  }

  async unmute(key) {
    key = this.personBlocked(key) ?? key;
    if (this.blocks.get(key)?.level !== MUTE) return false;
    this.blocks.delete(key);
    this.forgetDevices(key);
    await this.saveBlocks();
    return true;
  }

  deviceSeen(device, identity) {
    // A member showed a valid delegation from `identity` (5.3). If that person is
    // blocked or muted the device is too, remembered, and the page told (a "caught"
    // event: what it showed of the device goes); true if it is now blocked (its link
    // closes).
    const entry = this.blocks.get(identity);
    if (!entry || device === this.keyHex || device === this.identityHex) return false;
    if (this.blockDevices.get(device) !== identity) {
      this.remember(identity, [device]);
      this.useBlocks(this.blocks);
      this.store.put("identity", "blockDevices", [...this.blockDevices]).catch(() => {});
    }
    this.emit({ type: "caught", key: device, identity, level: entry.level });
    if (entry.level !== BLOCK) return false;
    this.closeBlocked([device]);
    return true;
  }

  hide(roomKey, key, layer) {
    // A blocked key the node lists in a room: remembered, never a member.
    const room = this.rooms.get(roomKey);
    if (room && room.hidden.size < this.mesh.config.maxMembers) room.hidden.set(key, layer);
  }

  // --- what the node says ---

  onNodeFrame(client, url, frame) {
    if (client !== this.node) return;
    // Nodes are trusted for availability only: keys must look like keys before use.
    for (const name of ["key", "from"]) {
      if (name in frame && !KEY.test(frame[name])) {
        this.emit({ type: "node-error", code: "bad-frame", message: `node sent a bad ${name}` });
        return;
      }
    }
    const at = now();
    if (frame.type === "signal") {
      const { room, from, payload } = frame;
      this.signals = this.signals
        .then(() => this.onSignal(room, from, payload))
        .catch((error) => this.emit({ type: "problem", message: `signal from ${from.slice(0, 12)}: ${error.message ?? error}` }));
      return;
    } else if (frame.type === "peer-joined") {
      this.learnNodes([frame.url]);
      const layer = isLayer(frame.layer) ? frame.layer : null;
      if (this.blocked.has(frame.key)) this.hide(frame.room, frame.key, layer);
      // in a DM room an unknown key is refused (counted) or on probation (7.4)
      else if (this.rooms.get(frame.room)?.consider(frame.key) !== false) this.mesh.peerJoined(frame.room, frame.key, at, layer);
    } else if (frame.type === "named") {
      this.spawn(this.named(frame), "cannot offer early");
      return;
    } else if (frame.type === "peer-left") {
      this.rooms.get(frame.room)?.hidden.delete(frame.key);
      this.mesh.peerLeft(frame.room, frame.key, isLayer(frame.layer) ? frame.layer : null);
    } else if (frame.type === "moving") {
      this.mesh.moving(nodeUrls(frame.nodes));
    } else if (frame.type === "closed") {
      this.node = null;
      this.mesh.nodeLost(url, frame.code ?? null, at);
    } else if (frame.type === "error" || frame.type === "node-error") {
      this.emit({ type: "node-error", code: frame.code, message: frame.message });
      return;
    } else {
      return;
    }
    this.drive();
  }

  async named(frame) {
    // Members a first join under way named, once we signed its seat (docs/protocol.md
    // 2.5.3): offered to at once, admitted by the rules `joined` uses (a blocked key
    // never, a DM room the contact's keys only; probation and devices when the link
    // opens). `joined` lets go of any it does not list. What the Mesh then has the
    // page learn waits for the seat (seatAt), as `joined`'s own notices do.
    const room = this.rooms.get(frame.room);
    if (!this.config.earlyOffers || !room || room.seated.done || !Array.isArray(frame.members)) return;
    const node = this.node;
    await this.iceFor(node); // an early link needs the node's TURN servers as one after `joined` does
    const state = this.mesh.rooms.get(frame.room);
    if (this.node !== node || this.rooms.get(frame.room) !== room || !state || state.seated || state.seat !== null) return;
    const listed = frame.members.slice(0, this.mesh.config.maxMembers);
    this.learnNodes(listed.map((m) => m?.url));
    const keys = listed.map((m) => m?.key).filter((k) => KEY.test(k));
    const members = keys.filter((k) => !this.blocked.has(k) && room.consider(k)); // 5.4, 7.4
    for (const member of members) verifier(fromHex(member));
    room.earlyNotices ??= [];
    room.earlyLinks ??= [];
    this.mesh.named(frame.room, members, now());
    this.drive();
  }

  useIceServers(servers, node) {
    // `node`'s servers for the links made from now on, the Mesh's renewal timed by their
    // credentials, and kept for the next opening (what may be: serversHint).
    this.iceServers = servers;
    this.iceServersFrom = node;
    this.mesh.iceServers(iceExpiry(servers), now());
    keep(SERVERS_HINT, serversHint(servers));
  }

  iceFor(node) {
    // This node's ICE servers: from its welcome (5.0), else asked once (a `joined` brings
    // them too, but the connection made ahead and an early offer come before it).
    if (this.iceServersFrom === node) return Promise.resolve();
    if (Array.isArray(node.iceServers)) {
      this.useIceServers(node.iceServers, node);
      return Promise.resolve();
    }
    if (this.iceAsking?.node !== node) {
      const asked = node
        .request({ type: "ice-servers" })
        .then((reply) => {
          if (this.node !== node || this.iceServersFrom === node || !Array.isArray(reply.servers)) return;
          this.useIceServers(reply.servers, node);
        })
        .catch(() => {}); // the join's own answer brings them
      this.iceAsking = { node, asked };
    }
    return this.iceAsking.asked;
  }

  takeEarly(room) {
    // The notices held since a join under way named members (named()): for the seat's hold.
    const early = room.earlyNotices ?? [];
    room.earlyNotices = null;
    return early;
  }

  async onSignal(key, sender, payload) {
    // Verify first: the Mesh only ever hears of signals their sender signed for us.
    if (this.blocked.has(sender)) {
      this.count("refused.blocked"); // unanswered: to it we are unreachable (5.4)
      return;
    }
    const room = this.rooms.get(key);
    const kind = typeof payload === "object" && payload !== null ? payload.t : null;
    if (!room || (kind !== "sdp" && kind !== RELINK)) {
      this.count("refused.signal.unknown");
      return;
    }
    if (!room.consider(sender, false)) return; // a DM room: unanswered, like a block (7.4)
    let desc;
    try {
      desc = parseDescription(payload.desc);
      if ((desc.kind === RELINK) !== (kind === RELINK)) throw new ProtocolError("wrong-kind", "a relink must be signed as a relink");
      await verifyDescription(desc, room.key, sender, this.keyHex, now(), this.replays);
    } catch (error) {
      this.count(`refused.signal.${error.code ?? "error"}`);
      room.emit({ type: "refused", key: sender, message: `refused a ${kind} from ${sender.slice(0, 12)}: ${error.message}` });
      return;
    }
    if (this.rooms.get(key) !== room) return;
    if (desc.kind === "offer") {
      const slot = `${key}:${sender}`;
      this.offers.set(slot, desc);
      this.mesh.offerReceived(key, sender, now());
      this.drive(); // an Answer takes the offer now
      this.offers.delete(slot); // not taken: refused, or glare
    } else if (desc.kind === RELINK) {
      this.mesh.relinkReceived(key, sender, now());
      this.drive();
    } else {
      const link = room.awaitingAnswer(sender);
      if (link) await this.acceptAnswer(room, link, desc);
    }
  }

  async sendOffer(room, link) {
    const desc = await this.broken(room, link, link.offer());
    if (desc && room.byId.get(link.id) === link) this.signal(link.member, { t: "sdp", desc }, room.key);
  }

  async sendAnswer(room, link, offer) {
    const desc = await this.broken(room, link, link.answer(offer));
    if (desc && room.byId.get(link.id) === link) this.signal(link.member, { t: "sdp", desc }, room.key);
  }

  async acceptAnswer(room, link, desc) {
    await this.broken(room, link, link.acceptAnswer(desc));
    if (room.byId.get(link.id) !== link) return;
    this.mesh.answered(room.key, link.member, link.id);
    this.drive();
  }

  async broken(room, link, step) {
    // A link whose negotiation fails (a description the browser refuses) is failed at
    // once, rather than left to its connect deadline.
    try {
      return await step;
    } catch (error) {
      if (link.closed) return null; // closed meanwhile, as the Mesh said: nothing to tell
      this.linkChanged(room, link.id, link, true);
      throw error;
    }
  }

  async sendRelink(room, member) {
    const desc = await signDescription(RELINK, "", room.key, this.keyHex, member, this.identity, now());
    this.signal(member, { t: RELINK, desc }, room.key);
  }

  // --- links ---

  async linkChanged(room, id, link, broken = false) {
    // A link opened, closed or failed: the Mesh decides what follows.
    if (room.byId.get(id) !== link || this.closing) return;
    if (link.open && !broken) {
      if (link.told === "open") return;
      link.told = "open";
      link.path = await link.selectedPath().catch(() => null);
      if (room.byId.get(id) !== link || !link.open) return; // closed meanwhile: told below
      this.mesh.linkOpen(room.key, link.member, id, link.path === "relayed", now());
    } else if (link.failed || link.everOpen || broken) {
      if (link.told === "failed") return;
      link.told = "failed";
      const iceFailed = link.pc.connectionState === "failed" && !link.everOpen;
      this.mesh.linkFailed(room.key, link.member, id, iceFailed, now());
    } else {
      return;
    }
    this.drive();
    link.decided.resolve(); // its notice is out (held, on a first seat: offersFirst)
  }

  close() {
    this.closing = true;
    clearTimeout(this.renewal);
    this.coolDown();
    this.blank?.close();
    this.blank = null;
    clearTimeout(this.timer);
    this.mesh.close();
    this.mesh.commands(); // closing links is the rooms' job below
    for (const room of this.rooms.values()) room.close();
    this.node?.close();
    this.node = null;
  }
}
