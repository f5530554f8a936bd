// A client of one signaling node's WebSocket API (docs/protocol.md 3), as
// peer/signaling.py: prove the key (hello), then requests with ids, and what
// the node pushes unasked goes to `onevent`. A node may ask for a presence
// signature; the client checks the record is its own to sign first.
//
// Liveness (docs/protocol.md 3.1): the node sends a WebSocket PING to a page
// that has been quiet for a third of its idle timeout, and the browser answers
// with a PONG in its network stack, whatever this page's timers do; that is
// what keeps a hidden tab seated. Chromium wakes the chained timers (every
// setInterval) of a page hidden for 5 minutes at most once a minute
// ("intensive wake up throttling", chromestatus.com feature 4718288976216064),
// so the `ping` this client sends every third of the idle timeout may come
// late; it is kept for nodes that send no PINGs.

import { ProtocolError, base64, fromHex, hex } from "./bytes.js";
import { sign } from "./crypto.js";
import { takeSocket } from "./early.js";
import { helloMessage, layerKey, presencePayload, presenceValue } from "./rooms.js";

const MAX_PRESENCE_TTL = 3600;
const DEFAULT_IDLE = 60; // seconds, for a node whose welcome does not say
// The client API version this page speaks, sent as the hello's `v` (docs/protocol.md 3.1);
// signaling.protocol.PROTOCOL_VERSION is the same number.
export const PROTOCOL_VERSION = 2;

export class SignalingError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "SignalingError";
    this.code = code;
    this.detail = message; // the node's own words, without the code
  }
}

export function wsUrl(nodeUrl) {
  return nodeUrl.replace(/\/$/, "") + "/v1/ws";
}

export class SignalingClient {
  static connect(url, identity, publicKey, name, within = 10000) {
    // Open `url` (ws://host:port) and prove the key; resolves once welcomed. A socket
    // the page opened to `url` before its modules had loaded (early.js) is used first.
    return new Promise((resolve, reject) => {
      let ws;
      const early = takeSocket(url);
      try {
        ws = early?.ws ?? new WebSocket(wsUrl(url));
      } catch (error) {
        reject(new SignalingError("unreachable", `cannot reach ${url}: ${error.message}`));
        return;
      }
      const client = new SignalingClient(ws, identity, publicKey);
      const timer = setTimeout(() => {
        ws.close();
        reject(new SignalingError("timeout", `no welcome from ${url}`));
      }, within);
      client.onwelcome = () => {
        clearTimeout(timer);
        resolve(client);
      };
      client.onfail = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      client.name = name;
      client.url = url;
      for (const event of early?.frames ?? []) ws.onmessage(event); // heard before we listened
    });
  }

  constructor(ws, identity, publicKey) {
    this.ws = ws;
    this.identity = identity;
    this.key = publicKey;
    this.nodeId = null;
    this.nodeVersion = 0; // the protocol version the node speaks (challenge, welcome `v`)
    this.iceServers = null; // the STUN/TURN servers the welcome gave, if it did (5.0)
    this.nodeUrl = "";
    this.nodes = [];
    this.rooms = new Map(); // room hex -> layer
    this.joining = new Set();
    this.signedJoin = new Map(); // room hex -> the layer whose seat a join under way signed (2.5.3)
    this.unaskedMembers = 0; // `members` frames without an id for no join of ours under way (dropped)
    this.joinTurn = Promise.resolve(); // one join at a time: a node refuses one sent meanwhile
    this.waiters = new Map();
    this.nextId = 0;
    this.welcomed = false;
    this.onevent = () => {};
    this.queue = Promise.resolve();
    this.signTimes = {}; // the last sign request: heard, taken, checked, signed (benchmarks)
    ws.onmessage = (event) => {
      const heard = performance.now() / 1000;
      // one frame at a time: a sign request must not overtake the frames before it
      this.queue = this.queue.then(() => this.dispatch(event.data, heard)).catch((error) => {
        this.onevent({ type: "node-error", code: "bad-frame", message: String(error) });
      });
    };
    ws.onclose = (event) => this.closed(event);
    ws.onerror = () => {};
  }

  async dispatch(text, heard) {
    const frame = JSON.parse(text);
    if (typeof frame !== "object" || frame === null) throw new ProtocolError("shape", "a frame is an object");
    if (!this.welcomed) return this.handshake(frame);
    const waiter = frame.id !== undefined ? this.waiters.get(frame.id) : undefined;
    if (waiter && frame.type !== "sign") {
      this.waiters.delete(frame.id);
      waiter(frame);
    } else if (frame.type === "sign") {
      this.signTimes = { heard, taken: performance.now() / 1000 };
      await this.signPresence(frame);
    } else if (frame.type === "members" && frame.id === undefined) {
      // members proven after the sign request (2.5.3): only for a join of ours under
      // way whose seat in that layer we signed
      if (this.joining.has(frame.room) && this.signedJoin.get(frame.room) === frame.layer && Array.isArray(frame.members)) {
        this.onevent({ type: "named", room: frame.room, layer: frame.layer, members: frame.members });
      } else this.unaskedMembers += 1;
    } else {
      this.onevent(frame);
    }
  }

  async handshake(frame) {
    if (frame.type === "challenge") {
      this.nodeId = fromHex(frame.node, 20);
      if (Number.isSafeInteger(frame.version)) this.nodeVersion = frame.version;
      const sig = await sign(this.identity, helloMessage(fromHex(frame.nonce, 32), this.nodeId));
      const hello = { type: "hello", key: hex(this.key), sig: base64(sig), v: PROTOCOL_VERSION };
      if (this.name) hello.name = this.name.slice(0, 64);
      this.ws.send(JSON.stringify(hello));
    } else if (frame.type === "welcome") {
      this.welcomed = true;
      if (Number.isSafeInteger(frame.v)) this.nodeVersion = frame.v;
      this.nodeUrl = String(frame.url ?? this.url);
      this.nodes = [...new Set((Array.isArray(frame.nodes) ? frame.nodes : []).map(String))];
      if (Array.isArray(frame.ice_servers)) this.iceServers = frame.ice_servers;
      const idle = Number.isFinite(frame.idle) && frame.idle > 0 ? frame.idle : DEFAULT_IDLE;
      this.keepalive = setInterval(() => {
        if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "ping" }));
      }, Math.max(0.2, idle / 3) * 1000);
      this.onwelcome();
    } else if (frame.type === "error") {
      this.onfail(new SignalingError(frame.code, frame.message));
      this.ws.close();
    }
  }

  closed(event) {
    clearInterval(this.keepalive);
    const error = new SignalingError("closed", `connection to the node closed (${event.code})`);
    if (!this.welcomed) {
      this.onfail?.(new SignalingError("unreachable", `cannot reach ${this.url}`));
    }
    for (const waiter of this.waiters.values()) waiter({ type: "error", code: "closed", message: error.message });
    this.waiters.clear();
    if (this.welcomed) this.onevent({ type: "closed", code: event.code, reason: event.reason });
  }

  request(frame, within = 10000) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new SignalingError("timeout", `${frame.type}: no answer`));
      }, within);
      this.waiters.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.type === "error") reject(new SignalingError(reply.code, reply.message));
        else resolve(reply);
      });
      this.send({ ...frame, id });
    });
  }

  send(frame) {
    if (this.ws.readyState !== WebSocket.OPEN) throw new SignalingError("closed", "not connected");
    this.ws.send(JSON.stringify(frame));
  }

  join(room, layer = null, friend = null) {
    // Sit in `room`: in `layer`, else beside `friend` (a member's key), else where the
    // node places us; seated already, this moves us (docs/protocol.md 3.2). Joins wait
    // for each other's answers, as the node requires (3.5).
    const frame = { type: "join", room };
    if (layer !== null) frame.layer = layer;
    if (friend !== null) frame.friend = friend;
    const turn = this.joinTurn.then(async () => {
      this.joining.add(room);
      try {
        const reply = await this.request(frame);
        this.rooms.set(room, reply.layer);
        return reply;
      } finally {
        this.joining.delete(room);
        this.signedJoin.delete(room);
      }
    });
    this.joinTurn = turn.catch(() => {});
    return turn;
  }

  layers(room) {
    // The room-wide picture: our layer, the estimated layers and people, a few layers' counts.
    return this.request({ type: "layers", room });
  }

  async leave(room) {
    this.rooms.delete(room);
    await this.request({ type: "leave", room });
  }

  async putRecord(wire) {
    // Store an opaque signed record (docs/protocol.md 7.3); how many DHT nodes took it.
    return (await this.request({ type: "put-record", record: wire }, 20000)).stored;
  }

  async getRecord(key, publisher) {
    // The newest record `publisher` stored under `key` (hex), as on the wire, or null.
    return (await this.request({ type: "get-record", key, publisher }, 20000)).record ?? null;
  }

  signal(to, payload, room) {
    this.send({ type: "signal", to, payload, room });
  }

  async signPresence(frame) {
    // Sign only our own presence: a room we joined, at this node, bounded expiry.
    const room = fromHex(frame.room, 20);
    const { layer, seq, expires } = frame;
    const value = new TextDecoder().decode(presenceValue(room, layer, this.nodeId, String(frame.url)));
    const acceptable =
      (this.joining.has(frame.room) || this.rooms.get(frame.room) === layer) &&
      frame.node === hex(this.nodeId) &&
      frame.value === value &&
      frame.key === hex(await layerKey(room, layer)) &&
      Number.isSafeInteger(seq) &&
      Number.isSafeInteger(expires) &&
      expires <= Date.now() / 1000 + MAX_PRESENCE_TTL;
    if (!acceptable) {
      this.onevent({ type: "node-error", code: "refused-sign", message: "the node asked to sign a foreign record" });
      return;
    }
    this.signTimes.checked = performance.now() / 1000;
    const payload = await presencePayload(this.key, room, layer, this.nodeId, String(frame.url), seq, expires);
    const sig = await sign(this.identity, payload);
    this.send({ type: "signed", id: frame.id, sig: base64(sig) });
    this.signTimes.signed = performance.now() / 1000;
    if (Array.isArray(frame.members) && this.joining.has(frame.room)) {
      // a join under way names whom we may offer to, now that we signed (2.5.3)
      this.signedJoin.set(frame.room, layer);
      this.onevent({ type: "named", room: frame.room, layer, members: frame.members });
    }
  }

  close() {
    clearInterval(this.keepalive);
    this.onevent = () => {};
    this.ws.close();
  }
}
