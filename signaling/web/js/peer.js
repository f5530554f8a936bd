// The browser peer: one identity, a smart signaling client with fail-over,
// and per room one RTCPeerConnection per member, as peer/peer.py
// (docs/protocol.md 5.0). The newcomer offers; in glare the lower key wins; a
// member heard of through `peer-joined` waits a grace period for an offer and
// then the keys decide; a failed link is re-offered by the lower key.

import { ProtocolError, fromHex, hex } from "./bytes.js";
import { generateIdentity, publicKeyBytes, requireWebCrypto, sign, verify } from "./crypto.js";
import { MessagingError, ReliableRoom, parseEnvelope, signedBytes } from "./messaging.js";
import { canonicalUrl, roomKey } from "./rooms.js";
import { ReplayGuard, parseDescription, signDescription, verifyDescription } from "./sdp.js";
import { SignalingClient, SignalingError } from "./signaling.js";
import { Store } from "./store.js";
import { parseControlFrame } from "./frames.js";
import { Transfers } from "./transfer.js";

export const CONFIG = {
  backoffBase: 0.5,
  backoffCap: 30,
  relinkBase: 0.5,
  relinkCap: 10,
  offerGrace: 1.0,
  connectTimeout: 30,
  gatherTimeout: 5.0,
  relayOnly: false,
  maxFileBytes: 256 * 1024 * 1024,
  autoAcceptBytes: 32 * 1024 * 1024,
};
const MAX_NAME = 64;
const MAX_CONTROL_FRAME = 256 * 1024;

const now = () => Date.now() / 1000;
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const jitter = (attempt, base, cap) => Math.random() * Math.min(cap, base * 2 ** attempt);

export { MessagingError, ProtocolError, SignalingError, canonicalUrl };

// --- one connection to one member ---

class Link {
  constructor(room, member, onFrame, onState, onFileChannel) {
    this.room = room;
    this.member = member;
    const config = { iceServers: room.iceServers };
    if (room.peer.config.relayOnly) config.iceTransportPolicy = "relay";
    this.pc = new RTCPeerConnection(config);
    this.control = this.pc.createDataChannel("control", { negotiated: true, id: 0 });
    this.open = false;
    this.everOpen = false;
    this.closed = false;
    this.control.onopen = () => {
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
    return this.pc.signalingState === "have-local-offer";
  }

  async gathered() {
    // No trickle: the whole description, candidates included, is one signal.
    if (this.pc.iceGatheringState === "complete") return;
    await Promise.race([
      new Promise((resolve) => {
        this.pc.addEventListener("icegatheringstatechange", () => {
          if (this.pc.iceGatheringState === "complete") resolve();
        });
      }),
      sleep(this.room.peer.config.gatherTimeout),
    ]);
  }

  async describe(kind) {
    await this.gathered();
    const { peer } = this.room;
    return signDescription(kind, this.pc.localDescription.sdp, this.room.key, peer.keyHex, this.member, peer.identity, now());
  }

  async offer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    return this.describe("offer");
  }

  async answer(desc) {
    await this.pc.setRemoteDescription({ type: "offer", sdp: desc.sdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    return this.describe("answer");
  }

  async acceptAnswer(desc) {
    await this.pc.setRemoteDescription({ type: "answer", sdp: desc.sdp });
  }

  send(frame) {
    if (!this.open || this.closed) return false;
    try {
      this.control.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  async path() {
    // 'direct' or 'relayed', from the selected candidate pair.
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
    const relays = this.room.iceServers.some((s) => [s.urls].flat().some((u) => String(u).startsWith("turn")));
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
    this.pc.close();
  }
}

// --- a joined room ---

export class Room {
  constructor(peer, key, url, layer, state) {
    this.peer = peer;
    this.key = key;
    this.url = url;
    this.layer = layer;
    this.members = new Set();
    this.names = new Map();
    this.paths = new Map();
    this.links = new Map();
    this.iceServers = [];
    this.relinks = new Map();
    this.unreachable = new Set(); // members the application was told about, until they connect
    this.core = new ReliableRoom(key, peer.keyHex, {}, state ?? {}, now());
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
      autoAcceptBytes: peer.config.autoAcceptBytes,
    });
  }

  emit(event) {
    this.peer.emit({ ...event, room: this });
  }

  serial(task) {
    // Frames and sends run one at a time: signatures are checked asynchronously.
    const run = this.chain.then(task);
    this.chain = run.catch((error) => this.emit({ type: "problem", message: String(error) }));
    return run;
  }

  // --- the application's side ---

  send(text) {
    return this.serial(async () => {
      const unsigned = this.core.reserve(text, now());
      const env = { ...unsigned, sig: hex(await sign(this.peer.identity, signedBytes(unsigned))) };
      this.core.commit(env);
      await this.save(); // a reload must never reuse this seq
      this.service();
      return env;
    });
  }

  async sendFile(file) {
    const members = [...this.links].filter(([, link]) => link.open).map(([key]) => key);
    return this.transfers.offer(file, members);
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

  // --- links ---

  newLink(member) {
    const old = this.links.get(member);
    if (old) {
      this.core.disconnected(member);
      old.close();
    }
    const link = new Link(
      this,
      member,
      (from, frame) => this.onFrame(from, frame),
      (l) => this.linkState(l),
      (l, channel) => this.transfers.onChannel(l.member, channel),
    );
    this.links.set(member, link);
    setTimeout(() => {
      if (this.links.get(member) === link && !link.everOpen && !link.failed) {
        link.close();
        this.linkState(link); // given up: relink as after a failure
        this.reportUnreachable(link);
      }
    }, this.peer.config.connectTimeout * 1000);
    return link;
  }

  reportUnreachable(link) {
    if (this.unreachable.has(link.member)) return;
    this.unreachable.add(link.member);
    const message = `cannot connect to ${link.member.slice(0, 12)}: ${link.failureReason()}`;
    this.emit({ type: "unreachable", key: link.member, message });
  }

  async offerTo(member) {
    const link = this.newLink(member);
    const desc = await link.offer();
    if (this.links.get(member) === link) this.peer.signal(member, { t: "sdp", desc }, this.key);
  }

  onFrame(member, frame) {
    if (typeof frame !== "object" || frame === null) return;
    if (frame.t === "profile") {
      if (typeof frame.name === "string" && frame.name.length > 0 && frame.name.length <= MAX_NAME) {
        this.names.set(member, frame.name);
        this.emit({ type: "profile", key: member, name: frame.name });
      }
      return;
    }
    if (this.transfers.onControl(member, frame)) return;
    this.serial(async () => {
      const checked = await this.checkEnvelopes(frame);
      if (checked) {
        this.core.receive(member, checked, now());
        this.service();
      }
    });
  }

  async checkEnvelopes(frame) {
    // Envelopes with a bad shape or signature are dropped and counted, as in the core.
    const envs = frame.t === "msg" ? [frame.env] : frame.t === "hist" && Array.isArray(frame.envs) ? frame.envs : null;
    if (envs === null) return frame;
    const good = [];
    for (const data of envs.slice(0, 800)) {
      try {
        const env = parseEnvelope(data);
        if (await verify(fromHex(env.author), signedBytes(env), fromHex(env.sig))) good.push(env);
        else this.core.count("drop.bad_signature");
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        this.core.count("drop.malformed_envelope");
      }
    }
    if (!good.length) return null;
    return frame.t === "msg" ? { t: "msg", env: good[0] } : { t: "hist", envs: good };
  }

  async linkState(link) {
    if (this.links.get(link.member) !== link) return;
    if (link.open) {
      this.relinks.delete(link.member);
      this.unreachable.delete(link.member);
      if (this.peer.name) link.send({ t: "profile", name: this.peer.name.slice(0, MAX_NAME) });
      this.core.connected(link.member, now());
      this.transfers.memberConnected(link.member);
      this.service();
      const path = await link.path();
      this.paths.set(link.member, path);
      this.emit({ type: "connected", key: link.member, path });
      link.watchPath(async () => {
        const now = await link.path();
        if (link.open && this.links.get(link.member) === link && now !== this.paths.get(link.member)) {
          this.paths.set(link.member, now);
          this.emit({ type: "path", key: link.member, path: now });
        }
      });
    } else {
      this.core.disconnected(link.member);
      this.paths.delete(link.member);
      this.emit({ type: "disconnected", key: link.member });
      if (link.pc.connectionState === "failed" && !link.everOpen) this.reportUnreachable(link);
      if (link.failed && this.members.has(link.member)) this.relink(link.member, link);
      this.service();
    }
  }

  async relink(member, failed, wait = 0) {
    // The lower key offers again; the higher key asks it to with `relink`.
    const attempt = this.relinks.get(member) ?? 0;
    this.relinks.set(member, attempt + 1);
    const { relinkBase, relinkCap } = this.peer.config;
    await sleep(wait + jitter(attempt, relinkBase, relinkCap));
    if ((this.links.get(member) ?? null) !== failed || !this.members.has(member)) return;
    try {
      if (this.peer.keyHex < member) await this.offerTo(member);
      else this.peer.signal(member, { t: "relink" }, this.key);
    } catch (error) {
      this.emit({ type: "problem", message: `cannot reach ${member.slice(0, 12)}: ${error.message}` });
    }
  }

  expectOffer(member) {
    if (!this.links.has(member)) this.relink(member, null, this.peer.config.offerGrace);
  }

  memberJoined(member) {
    if (member === this.peer.keyHex || this.members.has(member)) return false;
    this.members.add(member);
    this.emit({ type: "member-joined", key: member });
    return true;
  }

  memberLeft(member) {
    if (!this.members.delete(member)) return;
    const link = this.links.get(member);
    this.links.delete(member);
    this.core.disconnected(member);
    this.paths.delete(member);
    link?.close();
    this.emit({ type: "member-left", key: member });
  }

  // --- the core ---

  service() {
    for (const [member, frame] of this.core.framesToSend()) this.links.get(member)?.send(frame);
    let changed = false;
    for (const event of this.core.takeEvents()) {
      changed = true;
      if (event.type === "delivered") {
        this.emit({ type: "message", env: event.env, mine: event.env.author === this.peer.keyHex });
      } else {
        this.emit(event);
      }
    }
    if (changed) this.saveSoon();
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
    return this.peer.store.saveRoomState(this.key, this.core.state());
  }

  close() {
    clearTimeout(this.timer);
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}

// --- the identity and its node ---

export class Peer {
  static async open(nodes, { name = null, config = {}, dbName } = {}) {
    requireWebCrypto();
    const store = await Store.open(dbName);
    let identity = await store.identity();
    if (!identity) {
      identity = await generateIdentity();
      await store.saveIdentity(identity);
    }
    const peer = new Peer(store, identity, await publicKeyBytes(identity), nodes, { ...CONFIG, ...config });
    peer.name = name ?? (await store.name());
    if (name !== null) await store.saveName(name);
    return peer;
  }

  constructor(store, identity, publicKey, nodes, config) {
    this.store = store;
    this.identity = identity;
    this.publicKey = publicKey;
    this.keyHex = hex(publicKey);
    this.nodes = [...new Set(nodes)];
    this.config = config;
    this.rooms = new Map();
    this.node = null;
    this.listeners = new Set();
    this.replays = new ReplayGuard();
    this.closing = false;
    this.connectedOnce = null;
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

  async setName(name) {
    this.name = name.slice(0, MAX_NAME);
    await this.store.saveName(this.name);
    for (const room of this.rooms.values()) {
      for (const link of room.links.values()) link.send({ t: "profile", name: this.name });
    }
  }

  // --- nodes ---

  start() {
    this.connectedOnce ??= this.connectAny().then(() => this.stayConnected());
    return this.connectedOnce;
  }

  async connectAny() {
    // The first node that answers; backoff with full jitter between rounds.
    for (let attempt = 0; !this.closing; attempt++) {
      for (const url of [...this.nodes]) {
        this.emit({ type: "status", state: "connecting", node: url });
        try {
          this.node = await SignalingClient.connect(url, this.identity, this.publicKey, this.name);
        } catch (error) {
          this.emit({ type: "status", state: "unreachable", node: url, message: error.message });
          continue;
        }
        for (const learned of this.node.nodes) if (!this.nodes.includes(learned)) this.nodes.push(learned);
        this.node.onevent = (frame) => this.onNodeFrame(frame);
        this.emit({ type: "status", state: "connected", node: this.node.nodeUrl, nodes: [...this.nodes] });
        return;
      }
      const wait = jitter(attempt, this.config.backoffBase, this.config.backoffCap);
      this.emit({ type: "status", state: "retrying", in: wait, message: "no signaling node reachable; retrying" });
      await sleep(wait);
    }
  }

  stayConnected() {
    // Returns at once; a lost node is replaced in the background and rooms rejoined.
    this.lost = async (code) => {
      if (this.closing) return;
      if (code === 4001) {
        this.emit({ type: "status", state: "replaced", message: "this identity connected from another tab" });
        return;
      }
      const failed = this.node;
      this.nodes = this.nodes.filter((u) => u !== failed.nodeUrl && u !== failed.url).concat([failed.url]);
      this.emit({ type: "status", state: "lost", node: failed.url, message: `lost the node ${failed.url}; trying others` });
      await this.connectAny();
      await this.rejoin();
    };
  }

  async rejoin() {
    for (const room of this.rooms.values()) {
      try {
        const joined = await this.node.join(room.key, room.layer);
        this.seat(room, joined, false);
        room.emit({ type: "rejoined", node: this.node.nodeUrl, layer: joined.layer });
      } catch (error) {
        room.emit({ type: "problem", message: `rejoin failed: ${error.message}` });
      }
    }
  }

  learnNode(url) {
    // A member's home node is a live node too: one more place to go if ours fails.
    if (typeof url === "string" && /^wss?:\/\/[^/]+$/.test(url) && !this.nodes.includes(url)) this.nodes.push(url);
  }

  signal(to, payload, room) {
    try {
      this.node.signal(to, payload, room);
    } catch (error) {
      this.emit({ type: "problem", message: `cannot signal ${to.slice(0, 12)}: ${error.message}` });
    }
  }

  // --- rooms ---

  async join(pageUrl, { scope = "page" } = {}) {
    const canonical = canonicalUrl(pageUrl, scope);
    const key = hex(await roomKey(canonical));
    if (this.rooms.has(key)) return this.rooms.get(key);
    await this.start();
    const state = await this.store.roomState(key);
    const joined = await this.node.join(key);
    const room = new Room(this, key, canonical, joined.layer, state);
    this.rooms.set(key, room);
    this.seat(room, joined, true);
    return room;
  }

  seat(room, joined, offer) {
    room.layer = joined.layer;
    room.iceServers = joined.ice_servers ?? [];
    room.total = joined.total;
    for (const member of joined.members ?? []) {
      this.learnNode(member.url);
      room.memberJoined(member.key);
      const link = room.links.get(member.key);
      if (offer && (!link || link.failed)) {
        room.offerTo(member.key).catch((error) => room.emit({ type: "problem", message: `cannot offer to ${member.key.slice(0, 12)}: ${error.message}` }));
      }
    }
  }

  async leave(room) {
    this.rooms.delete(room.key);
    room.close();
    try {
      await this.node?.leave(room.key);
    } catch {
      // the node may be gone; our presence lapses on its own
    }
  }

  // --- what the node says ---

  onNodeFrame(frame) {
    // Nodes are trusted for availability only: keys must look like keys before use.
    for (const name of ["key", "from"]) {
      if (name in frame && !/^[0-9a-f]{64}$/.test(frame[name])) {
        this.emit({ type: "node-error", code: "bad-frame", message: `node sent a bad ${name}` });
        return;
      }
    }
    const room = this.rooms.get(frame.room);
    if (frame.type === "signal") {
      if (room) this.onSignal(room, frame.from, frame.payload).catch((error) => room.emit({ type: "problem", message: String(error) }));
    } else if (frame.type === "peer-joined") {
      this.learnNode(frame.url);
      if (room && room.memberJoined(frame.key)) room.expectOffer(frame.key);
    } else if (frame.type === "peer-left") {
      room?.memberLeft(frame.key);
    } else if (frame.type === "moving") {
      this.nodes = [...new Set([...(frame.nodes ?? []), ...this.nodes])];
    } else if (frame.type === "closed") {
      this.lost?.(frame.code);
    } else if (frame.type === "error" || frame.type === "node-error") {
      this.emit({ type: "node-error", code: frame.code, message: frame.message });
    }
  }

  async onSignal(room, sender, payload) {
    if (typeof payload !== "object" || payload === null) return;
    if (payload.t === "relink") {
      if (room.members.has(sender) && this.keyHex < sender) {
        const link = room.links.get(sender);
        if (!link || !link.awaitingAnswer) await room.offerTo(sender);
      }
      return;
    }
    if (payload.t !== "sdp") return;
    let desc;
    try {
      desc = parseDescription(payload.desc);
      await verifyDescription(desc, room.key, sender, this.keyHex, now(), this.replays);
    } catch (error) {
      room.emit({ type: "problem", message: `refused a description from ${sender.slice(0, 12)}: ${error.message}` });
      return;
    }
    if (desc.kind === "offer") {
      const link = room.links.get(sender);
      if (link && link.awaitingAnswer && this.keyHex < sender) return; // glare: our offer wins
      room.memberJoined(sender);
      const fresh = room.newLink(sender);
      const answer = await fresh.answer(desc);
      this.signal(sender, { t: "sdp", desc: answer }, room.key);
    } else {
      const link = room.links.get(sender);
      if (link && link.awaitingAnswer) await link.acceptAnswer(desc);
    }
  }

  close() {
    this.closing = true;
    for (const room of this.rooms.values()) room.close();
    this.node?.close();
  }
}
