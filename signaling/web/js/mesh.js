// A peer's links and its signaling node, as a core with no I/O: the browser's
// twin of peer/mesh.py (docs/protocol.md 5.0). Read that module's docstring
// for the rules and whom they constrain; this file follows it function by
// function, so the two can be read side by side, and
// tests/web/test_mesh_twins.py runs both on one random sequence of events
// and compares every output.
//
// The glue (peer.js) tells the Mesh what happened (a node connected or lost,
// a join answered, a member joined or left, a verified offer or relink, a
// link opened or failed, fresh ICE servers) and the time; it takes out
// commands (`commands()`) and re-arms one timer at `getTimer()`. Randomness
// (backoff jitter) comes from an injected `rng() -> [0, 1)`.
//
// Keys and rooms are lower-case hex strings (bytes in Python; hex order is
// byte order). Commands and notices are plain objects `{type, ...fields}`
// with the Python dataclasses' field names, in their order. Float arithmetic
// is written in Python's order, so both cores compute the same numbers.

export const MAX_NODES = 64; // node URLs remembered for fail-over
export const CLOSE_REPLACED = 4001;
export const MAX_DOUBLINGS = 32; // backoff stops doubling here (any cap is reached long before)
export const RETRY_ICE_AFTER = 30; // an ice-servers request not answered this long ago is asked again

export const MESH_DEFAULTS = Object.freeze({
  // Fail-over rounds over the node list: full jitter up to base * 2^round, capped.
  backoffBase: 0.5,
  backoffCap: 30.0,
  // Re-offering a failed link: full jitter up to base * 2^attempt, capped.
  relinkBase: 0.5,
  relinkCap: 10.0,
  // How long a member waits for a newcomer's offer before the keys decide who offers.
  offerGrace: 1.0,
  // A link not open this long after it was made is given up.
  connectTimeout: 30.0,
  // Connected to a node the person did not choose (learned, after theirs failed): try
  // theirs again this long after, doubling per failed try, capped.
  returnAfter: 60.0,
  returnCap: 960.0,
  // Fetch fresh ICE credentials this long before they expire (or at half their life).
  renewBefore: 300.0,
  // Offers and relinks taken from one member (a token bucket).
  maxMembers: 256, // members kept per room: a node that lists more (a rogue one) gets the first ones
  offersPerSecond: 0.5,
  offerBurst: 4.0,
});

// --- rate: dht/ratelimit.py's TokenBucket, the same arithmetic ---

export class TokenBucket {
  // `rate` tokens per second up to `burst`.
  constructor(rate, burst, now) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.stamp = now;
  }

  take(now, cost = 1.0) {
    // Spend `cost` tokens if there are that many; false (nothing spent) if not.
    this.tokens = Math.min(this.burst, this.tokens + Math.max(0.0, now - this.stamp) * this.rate);
    this.stamp = now;
    if (this.tokens >= cost) {
      this.tokens -= cost;
      return true;
    }
    return false;
  }

  full(now) {
    return this.tokens + Math.max(0.0, now - this.stamp) * this.rate >= this.burst;
  }
}

// --- commands (what the glue does) and notices (what the application learns) ---
// The same names and fields as the dataclasses of peer/mesh.py.

const ConnectNode = (url) => ({ type: "connect-node", url });
const JoinRoom = (room, layer, friend = null) => ({ type: "join-room", room, layer, friend }); // or, seated, move
const RequestIceServers = () => ({ type: "request-ice-servers" });
const Offer = (room, member, link) => ({ type: "offer", room, member, link }); // make `link`, signal a signed offer
const Answer = (room, member, link) => ({ type: "answer", room, member, link }); // make `link` from the offer, answer it
const SendRelink = (room, member) => ({ type: "send-relink", room, member }); // "offer me a (new) link", signed
const CloseLink = (room, member, link) => ({ type: "close-link", room, member, link });
const MemberJoined = (room, member) => ({ type: "member-joined", room, member });
const MemberLeft = (room, member) => ({ type: "member-left", room, member });
const LinkUp = (room, member, link) => ({ type: "link-up", room, member, link });
const LinkDown = (room, member, link) => ({ type: "link-down", room, member, link });
const Unreachable = (room, member, link) => ({ type: "unreachable", room, member, link });
const Refused = (room, member, reason) => ({ type: "refused", room, member, reason });
const NodeStatus = (state, url, wait = 0.0) => ({ type: "node-status", state, url, wait });

// --- state ---

export const NodeState = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  WAITING: "waiting",
  REPLACED: "replaced",
  CLOSED: "closed",
});

class Link {
  constructor(id, offered, created, credentialsExpire) {
    this.id = id;
    this.offered = offered; // we made the offer (else we answered one)
    this.created = created;
    this.credentialsExpire = credentialsExpire;
    this.open = false;
    this.answered = false; // for an offer: the answer was applied (no longer a glare candidate)
    this.relayed = false;
    this.renewedAt = null; // when a spare was last asked for, before this link's credentials expire
  }
}

class Member {
  constructor(offers) {
    this.offers = offers;
    this.link = null;
    this.spare = null;
    this.attempts = 0;
    this.retryAt = null; // when to try again (grace, backoff): the lower key offers, the higher relinks
    this.reported = false;
    this.tryingSince = null; // when we started trying (no link open since): the application hears connectTimeout after
    this.unlisted = false; // missing from the last `joined`, kept only for its open link: gone when it drops
    this.named = false; // named by a join under way (2.5.3), not yet listed by its `joined`
  }
}

class Room {
  constructor(layer = null, friend = null) {
    this.layer = layer; // the layer a (re)join asks for: the one asked at first or by a move, else our seat
    this.friend = friend; // a join or move asked to sit beside this key (until the node answers)
    this.seat = null; // the layer the node last seated us in (null: never seated yet)
    this.seated = false;
    this.moving = false; // a move was asked and not answered yet
    this.members = new Map(); // insertion order, as a Python dict
  }
}

export class Mesh {
  // Node fail-over and room links of one identity; see peer/mesh.py's docstring.
  constructor(key, nodes, config, rng, now) {
    if (!nodes.length) throw new Error("a peer needs at least one signaling node URL");
    this.key = key;
    this.config = { ...MESH_DEFAULTS, ...config };
    this.rng = rng;
    this.nodes = [];
    this.learnNodes(nodes);
    this.chosen = [...this.nodes]; // the nodes given at the start (the person's): the ones to return to
    this.state = NodeState.IDLE;
    this.node = null;
    this.returning = null; // a chosen node being tried while connected to a learned one
    this.returnAt = null;
    // Returns that failed in a row: a chosen node that refused us, or that dropped us
    // within returnAfter of its welcome (one that accepts and drops would otherwise
    // pull the rooms back and forth every returnAfter).
    this.returnTries = 0;
    this.chosenSince = null; // when the chosen node we are connected to welcomed us
    this.returned = false; // whether that welcome was a return (from a learned node)
    this.tried = new Set();
    this.round = 0;
    this.waitUntil = null;
    this.rooms = new Map();
    this.nextLink = 0;
    this.iceExpires = null;
    this.iceRenewAt = null;
    this.iceAsked = null; // when fresh ICE servers were last asked for (null: not waiting for any)
    this.out = [];
    this.counters = {};
    void now; // as in Python: nothing is due before start()
  }

  // --- output ---

  commands() {
    const out = this.out;
    this.out = [];
    return out;
  }

  count(name) {
    this.counters[name] = (this.counters[name] ?? 0) + 1;
  }

  // --- the signaling node ---

  start(now) {
    if (this.state === NodeState.IDLE) this.connectNext(now);
  }

  close() {
    this.state = NodeState.CLOSED;
    for (const room of [...this.rooms.keys()]) this.leave(room);
  }

  wants(url) {
    // Whether a connection to `url` that reached its welcome is to be taken (the glue
    // closes any other: asked for before the core moved on).
    if (this.state === NodeState.CONNECTING) return url === this.node;
    return this.state === NodeState.CONNECTED && url === this.returning;
  }

  nodeConnected(url, learned, now) {
    if (!this.wants(url)) return;
    this.returned = this.state === NodeState.CONNECTED;
    if (this.returned) {
      for (const room of this.rooms.values()) room.seated = false; // back at a chosen node: the rooms move there
    }
    this.state = NodeState.CONNECTED;
    this.node = url;
    this.returning = null;
    this.round = 0;
    this.tried.clear();
    this.learnNodes(learned);
    if (this.chosen.includes(url)) {
      this.chosenSince = now;
      this.returnAt = null;
    } else {
      this.returnAt = now + backoff(this.config.returnAfter, this.config.returnCap, this.returnTries);
    }
    this.out.push(NodeStatus("connected", url));
    for (const [key, room] of this.rooms) this.out.push(JoinRoom(key, room.layer, room.friend));
  }

  nodeFailed(url, now) {
    // A connection attempt to `url` did not get as far as the welcome.
    if (this.state === NodeState.CONNECTED && url === this.returning) {
      this.returning = null;
      this.returnTries += 1;
      this.returnAt = now + backoff(this.config.returnAfter, this.config.returnCap, this.returnTries);
      return;
    }
    if (this.state === NodeState.CONNECTING && url === this.node) this.connectNext(now);
  }

  nodeLost(url, code, now) {
    // The connection to `url` closed (after its welcome).
    if (this.state !== NodeState.CONNECTED || url !== this.node) return;
    this.returning = null;
    this.returnAt = null;
    if (this.chosenSince !== null) {
      if (now - this.chosenSince >= this.config.returnAfter) this.returnTries = 0; // it served a while: tries start over
      else if (this.returned) this.returnTries += 1; // a return it dropped soon: failed, as a refusal
      this.chosenSince = null;
    }
    for (const room of this.rooms.values()) room.seated = false;
    if (code === CLOSE_REPLACED) {
      // the same key connected elsewhere: not ours to fight
      this.state = NodeState.REPLACED;
      this.out.push(NodeStatus("replaced", url));
      return;
    }
    // the node that dropped us is the least likely to answer: try the others first
    this.nodes = [...this.nodes.filter((n) => n !== url), url];
    this.tried = new Set([url]);
    this.out.push(NodeStatus("lost", url));
    this.connectNext(now);
  }

  moving(nodes) {
    // The node is going away and names others: try those first.
    this.nodes = [...new Set([...nodes, ...this.nodes])].slice(0, MAX_NODES);
  }

  learnNodes(urls) {
    // More nodes to fail over to (a welcome's list, members' home nodes); bounded.
    for (const url of urls) {
      if (!this.nodes.includes(url) && this.nodes.length < MAX_NODES) this.nodes.push(url);
    }
  }

  connectNext(now) {
    const untried = this.nodes.filter((url) => !this.tried.has(url));
    if (!untried.length) {
      // a whole round failed: wait, then start a new one
      const cap = backoff(this.config.backoffBase, this.config.backoffCap, this.round);
      const wait = this.rng() * cap;
      this.round += 1;
      this.tried.clear();
      this.state = NodeState.WAITING;
      this.waitUntil = now + wait;
      this.out.push(NodeStatus("retrying", "", wait));
      return;
    }
    const url = untried[0];
    this.tried.add(url);
    this.state = NodeState.CONNECTING;
    this.node = url;
    this.out.push(NodeStatus("connecting", url));
    this.out.push(ConnectNode(url));
  }

  // --- rooms ---

  join(room, layer = null, friend = null) {
    // Sit in `room`: in `layer`, else beside `friend`, else where the node says.
    if (this.rooms.has(room)) return;
    this.rooms.set(room, new Room(layer, friend));
    if (this.state === NodeState.CONNECTED) this.out.push(JoinRoom(room, layer, friend));
  }

  move(room, layer = null, friend = null) {
    // Sit elsewhere in a joined `room`: in `layer`, else beside `friend`. The links
    // stay until the node answers (`joined`, or `joinRefused`).
    const state = this.rooms.get(room);
    if (state === undefined) return;
    state.layer = layer;
    state.friend = friend;
    state.moving = true;
    if (this.state === NodeState.CONNECTED) this.out.push(JoinRoom(room, layer, friend));
  }

  joinRefused(room, full) {
    // The node refused a join of `room` (`full`: the layer asked for has no seat).
    // A refused move asks for our seat again: the node may have let it go before
    // refusing. A rejoin refused because our layer filled up while we were away asks
    // for any seat. Anything else (a first join, a refused seat) is the application's
    // to tell; nothing is asked twice, so refusals never loop.
    const state = this.rooms.get(room);
    if (state === undefined || state.seat === null) return; // a first join: the application gives the room up
    if (state.moving) {
      state.moving = false;
      state.layer = state.seat;
    } else if (full && !state.seated && state.layer !== null) {
      state.layer = null;
    } else {
      return;
    }
    state.friend = null;
    if (this.state === NodeState.CONNECTED) this.out.push(JoinRoom(room, state.layer));
  }

  leave(room) {
    const state = this.rooms.get(room);
    if (state === undefined) return;
    this.rooms.delete(room);
    for (const [member, entry] of state.members) this.dropLinks(room, member, entry);
  }

  joined(room, layer, members, iceExpires, now) {
    // The node seated us in `layer`, with these members (a first join, a rejoin or a
    // move). In another layer than our seat, the old layer's members are not ours any
    // more, whatever their links, and we are the newcomer who offers.
    const state = this.rooms.get(room);
    if (state === undefined) return;
    const moved = state.seat !== null && state.seat !== layer;
    const newcomer = state.seat === null || moved;
    state.layer = state.seat = layer;
    state.seated = true;
    state.friend = null;
    state.moving = false;
    this.iceServers(iceExpires, now);
    const listed = new Set(members);
    listed.delete(this.key);
    for (const member of [...state.members.keys()].filter((m) => !listed.has(m))) {
      const link = state.members.get(member).link;
      if (state.members.get(member).named) {
        this.count("named.not_listed"); // named early, not in the layer we sit in
        this.remove(room, state, member);
      } else if (moved || link === null || !link.open) this.remove(room, state, member); // in another layer, or gone meanwhile
      else state.members.get(member).unlisted = true;
    }
    for (const member of members) {
      const known = state.members.get(member);
      if (member === this.key) continue;
      if (known === undefined) {
        const entry = this.add(room, state, member, now);
        if (entry === null) continue;
        if (newcomer) this.offer(room, member, entry, now);
        else entry.retryAt = now + this.config.offerGrace;
      } else {
        known.unlisted = known.named = false;
        if (known.link === null && known.retryAt === null) this.retryLater(known, now);
      }
    }
  }

  named(room, members, now) {
    // A first join under way named `members` (its `sign` request's `members`, or a
    // `members` frame without an id; docs/protocol.md 2.5.3), and we signed: offer to
    // them now, as a newcomer to its `joined`'s members. The `joined` that follows
    // offers to no one twice, and lets go of a named member it does not list.
    const state = this.rooms.get(room);
    if (state === undefined || state.seated || state.seat !== null) {
      this.count("refused.named.not_joining"); // only a first join is under way here
      return;
    }
    for (const member of members) {
      if (member === this.key || state.members.has(member)) continue;
      const entry = this.add(room, state, member, now);
      if (entry !== null) {
        entry.named = true;
        this.offer(room, member, entry, now);
      }
    }
  }

  peerJoined(room, member, now, layer = null) {
    // The node says `member` sat down in our layer (`layer`, when it says which).
    const state = this.rooms.get(room);
    if (state === undefined || member === this.key) return;
    if (layer !== null && !expects(state, layer)) {
      this.count("refused.member.other_layer"); // sent before a move: not ours
      return;
    }
    if (state.members.has(member)) {
      state.members.get(member).unlisted = state.members.get(member).named = false;
      return;
    }
    const entry = this.add(room, state, member, now);
    if (entry !== null) entry.retryAt = now + this.config.offerGrace; // the newcomer offers; if not, keys decide
  }

  peerLeft(room, member, layer = null) {
    // The node says `member` left our layer (`layer`, when it says which).
    const state = this.rooms.get(room);
    if (state === undefined || !state.members.has(member)) return;
    if (layer !== null && !expects(state, layer)) {
      this.count("refused.member_left.other_layer"); // the old layer's, told late
      return;
    }
    this.remove(room, state, member);
  }

  add(room, state, member, now) {
    if (state.members.size >= this.config.maxMembers) {
      this.count("refused.member.full");
      return null;
    }
    const bucket = new TokenBucket(this.config.offersPerSecond, this.config.offerBurst, now);
    const entry = new Member(bucket);
    state.members.set(member, entry);
    this.out.push(MemberJoined(room, member));
    return entry;
  }

  remove(room, state, member) {
    const entry = state.members.get(member);
    state.members.delete(member);
    this.dropLinks(room, member, entry);
    this.out.push(MemberLeft(room, member));
  }

  dropLinks(room, member, entry) {
    for (const link of [entry.spare, entry.link]) {
      if (link !== null) {
        if (link.open && link === entry.link) this.out.push(LinkDown(room, member, link.id));
        this.out.push(CloseLink(room, member, link.id));
      }
    }
    entry.link = entry.spare = null;
  }

  // --- signals from members (verified by the glue) ---

  member(room, sender, now, what) {
    const state = this.rooms.get(room);
    const entry = state !== undefined ? state.members.get(sender) : undefined;
    if (entry === undefined) {
      this.count(`refused.${what}.not_member`);
      this.out.push(Refused(room, sender, `${what} from a key that is not a member`));
      return null;
    }
    if (!entry.offers.take(now)) {
      this.count(`refused.${what}.rate`);
      this.out.push(Refused(room, sender, `too many ${what}s`));
      return null;
    }
    return entry;
  }

  offerReceived(room, sender, now) {
    const entry = this.member(room, sender, now, "offer");
    if (entry === null) return;
    const waiting = pending(entry);
    if (waiting !== null && waiting.offered && !waiting.answered && this.key < sender) {
      this.count("glare.ours"); // both offered: the lower key's offer wins
      return;
    }
    const fresh = this.newLink(entry, false, now);
    this.place(room, sender, entry, fresh);
    this.out.push(Answer(room, sender, fresh.id));
  }

  relinkReceived(room, sender, now) {
    // The member asks us (the lower key) to offer a new link.
    const entry = this.member(room, sender, now, "relink");
    if (entry === null) return;
    if (this.key > sender) {
      this.count("refused.relink.higher_key"); // only the lower key is asked
      return;
    }
    const waiting = pending(entry);
    if (waiting !== null && waiting.offered && !waiting.answered) {
      if (now - waiting.created < 2 * this.config.offerGrace) return; // an offer of ours is on its way already
      this.count("reoffer"); // it asks again: our offer never reached it, or was lost
    }
    this.offer(room, sender, entry, now);
  }

  answered(room, member, link) {
    // The answer to our offer on `link` was applied.
    const found = this.find(room, member, link);
    if (found !== null) found[1].answered = true;
  }

  // --- links ---

  newLink(entry, offered, now) {
    this.nextLink += 1;
    if (entry.tryingSince === null && (entry.link === null || !entry.link.open)) entry.tryingSince = now;
    return new Link(this.nextLink, offered, now, this.iceExpires);
  }

  offer(room, member, entry, now) {
    const fresh = this.newLink(entry, true, now);
    this.place(room, member, entry, fresh);
    this.out.push(Offer(room, member, fresh.id));
  }

  place(room, member, entry, fresh) {
    // A new link goes beside an open one as its spare (make before break), or
    // replaces a link that is not open.
    let old;
    if (entry.link !== null && entry.link.open) [old, entry.spare] = [entry.spare, fresh];
    else [old, entry.link] = [entry.link, fresh];
    if (old !== null) this.out.push(CloseLink(room, member, old.id));
    entry.retryAt = null;
  }

  find(room, member, link) {
    const state = this.rooms.get(room);
    const entry = state !== undefined ? state.members.get(member) : undefined;
    if (entry === undefined) return null;
    for (const candidate of [entry.link, entry.spare]) {
      if (candidate !== null && candidate.id === link) return [entry, candidate];
    }
    return null;
  }

  linkOpen(room, member, link, relayed, now) {
    const found = this.find(room, member, link);
    if (found === null) return;
    const [entry, opened] = found;
    opened.open = true;
    opened.relayed = relayed;
    if (opened === entry.spare) {
      // the spare takes over; the old link goes
      const old = entry.link;
      entry.link = opened;
      entry.spare = null;
      if (old !== null) {
        if (old.open) this.out.push(LinkDown(room, member, old.id));
        this.out.push(CloseLink(room, member, old.id));
      }
    }
    entry.attempts = 0;
    entry.retryAt = null;
    entry.reported = false;
    entry.tryingSince = null;
    this.out.push(LinkUp(room, member, link));
  }

  linkFailed(room, member, link, iceFailed, now) {
    // `link` closed or failed (`iceFailed`: no path was ever found).
    const found = this.find(room, member, link);
    if (found === null) return;
    const [entry, failed] = found;
    if (failed === entry.spare) {
      // the open link stays; nothing else changes
      entry.spare = null;
      this.out.push(CloseLink(room, member, link));
      return;
    }
    entry.link = null;
    if (failed.open) this.out.push(LinkDown(room, member, link));
    else if (iceFailed) this.report(room, member, entry, link); // before the close: the glue says why
    this.out.push(CloseLink(room, member, link));
    if (entry.spare !== null) {
      // a spare on its way takes the place of the failed link
      entry.link = entry.spare;
      entry.spare = null;
      return;
    }
    if (entry.unlisted) {
      // its link was all that said it was here
      this.remove(room, this.rooms.get(room), member);
      return;
    }
    this.retryLater(entry, now);
  }

  report(room, member, entry, link) {
    if (!entry.reported) {
      entry.reported = true;
      this.out.push(Unreachable(room, member, link));
    }
  }

  retryLater(entry, now) {
    const cap = backoff(this.config.relinkBase, this.config.relinkCap, entry.attempts);
    entry.attempts += 1;
    entry.retryAt = now + this.rng() * cap;
  }

  retry(room, member, entry, now) {
    // Grace or backoff is over and there is no usable link: the lower key offers,
    // the higher asks it to (and tries again later, in case the relink is lost).
    entry.retryAt = null;
    if (entry.link !== null) return;
    if (this.key < member) {
      this.offer(room, member, entry, now);
    } else {
      this.out.push(SendRelink(room, member));
      this.retryLater(entry, now);
    }
  }

  // --- ICE credentials ---

  iceServers(expires, now) {
    // Fresh ICE servers arrived (with a join or on request): new links use them.
    this.iceAsked = null;
    if (expires === null) {
      this.iceExpires = this.iceRenewAt = null;
      return;
    }
    this.iceExpires = expires;
    const life = Math.max(0.0, expires - now);
    this.iceRenewAt = now + Math.max(life / 2, life - this.config.renewBefore);
  }

  iceDue() {
    // When to ask for fresh ICE servers: at renewal time, and again if unanswered.
    if (this.iceRenewAt === null) return null;
    if (this.iceAsked === null) return this.iceRenewAt;
    return this.iceAsked + RETRY_ICE_AFTER;
  }

  renewAt(entry) {
    // When a member's relayed link replaces itself, before its credentials expire;
    // if a replacement failed, again `relinkCap` after the last try (never while a
    // spare is on its way).
    const link = entry.link;
    if (link === null || !link.open || !link.relayed || link.credentialsExpire === null) return null;
    if (entry.spare !== null) return null;
    const life = Math.max(0.0, link.credentialsExpire - link.created);
    let due = link.created + Math.max((life * 3) / 4, life - this.config.renewBefore / 2);
    if (link.renewedAt !== null) due = Math.max(due, link.renewedAt + this.config.relinkCap);
    return due;
  }

  // --- time ---

  getTimer() {
    // The next deadline. What needs the node (retries, renewals) waits while there
    // is none: it resumes with the next `joined`, so no deadline is ever in the past.
    const deadlines = [];
    const signalling = this.state === NodeState.CONNECTED;
    if (this.state === NodeState.WAITING && this.waitUntil !== null) deadlines.push(this.waitUntil);
    const renewIce = this.iceDue();
    if (signalling && renewIce !== null) deadlines.push(renewIce);
    if (signalling && this.returning === null && this.returnAt !== null) deadlines.push(this.returnAt);
    for (const state of this.rooms.values()) {
      for (const entry of state.members.values()) {
        for (const link of [entry.link, entry.spare]) {
          if (link !== null && !link.open) deadlines.push(link.created + this.config.connectTimeout);
        }
        if (entry.tryingSince !== null && !entry.reported) {
          deadlines.push(entry.tryingSince + this.config.connectTimeout);
        }
        if (!(signalling && state.seated)) continue;
        if (entry.retryAt !== null) deadlines.push(entry.retryAt);
        const renew = this.renewAt(entry);
        if (renew !== null) deadlines.push(renew);
      }
    }
    return deadlines.length ? Math.min(...deadlines) : null;
  }

  handleTimer(now) {
    const waiting = this.state === NodeState.WAITING && this.waitUntil !== null;
    if (waiting && this.waitUntil !== null && this.waitUntil <= now) {
      this.waitUntil = null;
      this.connectNext(now);
    }
    const signalling = this.state === NodeState.CONNECTED;
    const renewIce = this.iceDue();
    if (signalling && renewIce !== null && renewIce <= now) {
      this.iceAsked = now;
      this.out.push(RequestIceServers());
    }
    const back = this.returnAt;
    if (signalling && this.returning === null && back !== null && back <= now) {
      this.returnAt = null;
      this.returning = this.chosen[this.returnTries % this.chosen.length];
      this.out.push(NodeStatus("returning", this.returning));
      this.out.push(ConnectNode(this.returning));
    }
    for (const [room, state] of this.rooms) {
      for (const [member, entry] of [...state.members]) {
        this.deadlines(room, member, entry, now);
        if (signalling && state.seated) this.due(room, member, entry, now);
      }
    }
  }

  deadlines(room, member, entry, now) {
    // Links not open `connectTimeout` after they were made are given up.
    const deadline = this.config.connectTimeout;
    const spare = entry.spare;
    if (spare !== null && !spare.open && spare.created + deadline <= now) {
      this.linkFailed(room, member, spare.id, false, now);
    }
    const link = entry.link;
    if (link !== null && !link.open && link.created + deadline <= now) {
      this.report(room, member, entry, link.id); // as after an ICE failure
      this.linkFailed(room, member, link.id, false, now);
    }
    const since = entry.tryingSince;
    if (since !== null && !entry.reported && since + deadline <= now) {
      const current = entry.link !== null ? entry.link.id : 0;
      this.report(room, member, entry, current); // links replaced, none opened
    }
  }

  due(room, member, entry, now) {
    // Retries and renewals, which need the node to carry a signal.
    if (entry.retryAt !== null && entry.retryAt <= now) this.retry(room, member, entry, now);
    const link = entry.link;
    const renew = this.renewAt(entry);
    if (link !== null && renew !== null && renew <= now) {
      link.renewedAt = now;
      if (this.key < member) this.offer(room, member, entry, now);
      else this.out.push(SendRelink(room, member));
    }
  }
}

function expects(state, layer) {
  // Whether a member announced in `layer` can be ours: it is the layer we sit in, or
  // the one a join on its way asked for (a friend's, not known yet, included).
  if (state.seat === null || state.layer === null) return true;
  return layer === state.seat || layer === state.layer;
}

function pending(entry) {
  // The link being negotiated: the spare beside an open link, else a link not yet open.
  if (entry.link !== null && entry.link.open) return entry.spare;
  return entry.link;
}

function backoff(base, cap, attempts) {
  // The full-jitter window after `attempts` failures: base * 2^attempts, capped.
  return Math.min(cap, base * 2 ** Math.min(attempts, MAX_DOUBLINGS));
}
