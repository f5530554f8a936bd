// Files over data channels, as peer/transfer.py (docs/protocol.md 5.2). The
// sender offers on the control channel; a receiver that accepts answers with
// its verified offset; the sender opens `file:<id>` and streams chunk frames,
// pausing above 4 MiB buffered. The browser keeps received files in memory
// (a Blob) and verifies each chunk and the whole file's SHA-256.
//
// A file is new to the members present when it is offered; one who comes later
// hears of it as shared earlier, and the accept policy never takes that unasked.
// What this side offers is kept in SharedFiles: its newest files, each for an hour.
//
// What a member may make this side keep is bounded by OFFER_LIMITS (kept in an
// OfferBook): offers per member and room, a rate, an age; the accept policy
// (`autoAccept`, by default the small images shown inline) runs a few downloads at
// once and takes the next offer when one ends; a download that stalls fails and frees its slot. What a
// member's accepts may make this side upload is bounded by UPLOAD_LIMITS (decided
// by an UploadBook): one stream per member and file, a few at once (the rest wait,
// and hear file-wait), a rate, and the bytes buffered per member and per room.

import { ProtocolError, hex } from "./bytes.js";
import { randomBytes, sha256 } from "./crypto.js";
import {
  BROWSER_ACCEPT,
  DEFAULT_CHUNK,
  Download,
  OFFER_LIMITS,
  OfferBook,
  SharedFiles,
  UPLOAD_LIMITS,
  UploadBook,
  acceptRuleTakes,
  chunkFrame,
  offerFrame,
  parseOfferFrame,
} from "./files.js";

export const HIGH_WATER = 4 * 1024 * 1024;
export const LOW_WATER = 1024 * 1024;
export const MAX_REPAIRS = 5;

export class Transfers {
  constructor({
    sendControl,
    openChannel,
    emit,
    maxSize,
    autoAccept = BROWSER_ACCEPT,
    limits = OFFER_LIMITS,
    uploadLimits = UPLOAD_LIMITS,
    now = () => performance.now() / 1000,
  }) {
    this.sendControl = sendControl; // (member, frame) -> bool
    this.openChannel = openChannel; // (member, label) -> RTCDataChannel | null
    this.emit = emit;
    this.maxSize = maxSize;
    this.autoAccept = autoAccept; // which offers the policy takes unasked (an accept rule)
    this.limits = limits;
    this.now = now; // seconds, monotonic; tests pass their own
    this.outgoing = new Map(); // id -> {offer, file}: what we can serve (the files `shared` holds)
    this.shared = new SharedFiles(limits); // what we offer, for how long, and to whom each is new
    this.offers = new OfferBook(limits); // id -> {sender, offer}, bounded
    this.counters = this.offers.counters; // drops and failures by name (shared with the upload book)
    this.uploads = new UploadBook(uploadLimits, this.counters);
    this.streams = new Map(); // serial -> {serial, member, channel, stopped, opened, offset}
    this.buffering = new Map(); // our upload channels that may still hold data (closing ones too) -> member
    this.bufferWaiters = [];
    this.closed = false;
    this.incoming = new Map(); // id -> {sender, download, repairs, channel, activeAt}
    this.timer = null;
    this.timerAt = null;
  }

  // --- sending ---

  async offer(file, members, present = [], to = null) {
    // Offer a file to the members linked now (and to whoever connects later); it is new
    // to them and to the other present members; `to` offers it to those members only.
    if (file.size > this.maxSize) throw new ProtocolError("too-large", `${file.name} is over the limit of ${this.maxSize} bytes`);
    const digest = hex(await sha256(await file.arrayBuffer()));
    const mime = /^[\w.+-]+\/[\w.+-]+$/.test(file.type) ? file.type : "application/octet-stream";
    const name = (file.name || "file").replace(/[/\\\0]/g, "_");
    const offer = { id: hex(randomBytes(16)), name, size: file.size, mime, sha256: digest, chunk: DEFAULT_CHUNK };
    this.outgoing.set(offer.id, { offer, file, answered: new Set() }); // answered: members whose done or decline was told
    const now = this.now();
    // Receivers keep no more of ours than perMember: the newest stay offered.
    for (const gone of this.shared.add(offer, now, [...members, ...present], to)) this.outgoing.delete(gone);
    for (const member of members) if (this.shared.serves(offer.id, member, now)) this.sendControl(member, offerFrame(offer));
    this.arm();
    return offer;
  }

  offerTo(id, members, linked) {
    // Offer a file we offer already to more members, as new to them.
    const added = new Set(this.shared.address(id, members));
    const offer = this.shared.get(id, this.now());
    if (!offer) return;
    for (const member of linked) if (added.has(member)) this.sendControl(member, offerFrame(offer));
  }

  memberConnected(member) {
    // A (re)opened link: offers still wanted go again (how a late joiner gets them, as
    // files shared earlier unless it was present when we offered them; bounded by what
    // we offer, and known ones are ignored), partial downloads resume.
    for (const { offer, earlier } of this.shared.forMember(member, this.now())) this.sendControl(member, offerFrame(offer, earlier));
    for (const [id, incoming] of this.incoming) {
      if (incoming.sender === member) this.askFrom(id, incoming);
    }
  }

  memberLeft(member) {
    // A member left the room: its offers are forgotten (its downloads stall out), its
    // uploads stop and its waiting accepts go.
    this.offers.forgetMember(member);
    this.uploads.forgetMember(member, this.now());
    this.runUploads();
  }

  onAccept(member, frame) {
    const id = String(frame.id);
    const entry = this.outgoing.get(id);
    const offset = frame.offset;
    const refused = this.shared.has(id) && !this.shared.serves(id, member, this.now());
    if (!entry || refused || !Number.isSafeInteger(offset) || offset < 0 || offset > entry.offer.size) {
      this.offers.count("drop.accept_unknown");
      return;
    }
    this.uploads.accept(member, entry.offer.id, offset, this.now());
    this.runUploads();
    this.arm();
  }

  runUploads() {
    // Carry out what the upload book decided.
    let command;
    while (!this.closed && (command = this.uploads.nextCommand()) !== null) {
      if (command.type === "start-upload") this.startUpload(command);
      else if (command.type === "stop-upload") {
        const stream = this.streams.get(command.serial);
        if (stream) {
          this.streams.delete(command.serial);
          this.endStream(stream);
        }
      } else if (command.type === "wait-notice") this.sendControl(command.member, { t: "file-wait", id: command.id });
    }
  }

  startUpload({ serial, member, id }) {
    const entry = this.outgoing.get(id); // else forgotten since (we keep our newest offers only)
    const channel = entry ? this.openChannel(member, `file:${id}`) : null;
    if (!channel) {
      this.uploads.ended(serial, this.now());
      return;
    }
    let opened;
    const opening = new Promise((resolve) => (opened = resolve));
    // seen: the channel's bufferedAmount when the timer last looked; sentAll: every chunk
    // sent, the receiver closes the channel once it has verified the file
    const stream = { serial, member, channel, stopped: false, offset: null, opened: opening, seen: 0, sentAll: false };
    this.streams.set(serial, stream);
    this.buffering.set(channel, member);
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_WATER;
    const onOpen = () => {
      // The offset is taken as the channel opens (a later accept replaces the stream),
      // here rather than in the stream, so that the order is the events'.
      if (stream.offset === null && !stream.stopped) stream.offset = this.uploads.begin(serial, this.now());
      opened();
    };
    channel.addEventListener("open", onOpen, { once: true });
    channel.addEventListener("bufferedamountlow", () => {
      if (this.streams.get(serial) === stream) this.uploads.progress(serial, this.now());
      this.bufferFreed();
    });
    channel.addEventListener("close", () => {
      this.buffering.delete(channel);
      opened();
      if (this.streams.get(serial) === stream) {
        // the receiver closed it
        this.streams.delete(serial);
        this.endStream(stream);
        this.uploads.ended(serial, this.now());
        this.runUploads();
      }
      this.bufferFreed();
    });
    if (channel.readyState === "open") onOpen();
    this.stream(stream, entry)
      .catch((error) => this.emit({ type: "file-failed", id, reason: String(error) }))
      .finally(() => {
        if (!stream.sentAll && this.streams.get(serial) === stream) {
          // stopped early, or failed to read the file
          this.streams.delete(serial);
          this.endStream(stream);
          this.uploads.ended(serial, this.now());
          this.runUploads();
        }
      });
  }

  endStream(stream) {
    // Close the channel (what it buffered still goes out, then it closes) and end the
    // stream; its bytes count against the bounds until they are sent.
    stream.stopped = true;
    stream.channel.close();
    this.bufferFreed();
  }

  async stream(stream, { offer, file }) {
    // Send the chunks; then the upload keeps its slot until the receiver closes the channel
    // (it does once it has verified the file) or it stalls. Closing it here, right behind
    // the last chunk, can lose that chunk: Chromium drops what it has not yet delivered
    // when the stream resets.
    await stream.opened;
    const { channel } = stream;
    if (stream.stopped || stream.offset === null || channel.readyState !== "open") return;
    let position = stream.offset;
    while (position < offer.size && !stream.stopped && channel.readyState === "open") {
      const data = new Uint8Array(await file.slice(position, position + offer.chunk).arrayBuffer());
      if (!data.length) break;
      const frame = await chunkFrame(position, data);
      // Nothing is awaited between this check and the send: a bound is passed by one chunk at most.
      while (!stream.stopped && channel.readyState === "open" && this.overBounds(stream)) await this.bufferWait(stream);
      if (stream.stopped || channel.readyState !== "open") return;
      channel.send(frame);
      position += data.length;
      this.uploads.progress(stream.serial, this.now());
      this.emit({ type: "file-progress", id: offer.id, done: position, size: offer.size, sending: true });
    }
    stream.sentAll = position >= offer.size && !stream.stopped && channel.readyState === "open";
  }

  async bufferWait(stream) {
    // Wait until any of our upload channels drains below LOW_WATER or closes. A stream
    // waiting for others counts as moving once its own channel has drained (it is not
    // the one stalled).
    await new Promise((resolve) => this.bufferWaiters.push(resolve));
    if (stream.channel.bufferedAmount <= LOW_WATER) this.uploads.progress(stream.serial, this.now());
  }

  overBounds(stream) {
    if (stream.channel.bufferedAmount > HIGH_WATER) return true;
    let room = 0;
    let member = 0;
    for (const [channel, owner] of [...this.buffering]) {
      if (channel.readyState === "closed" || (channel.readyState === "closing" && !channel.bufferedAmount)) {
        this.buffering.delete(channel);
        continue;
      }
      room += channel.bufferedAmount;
      if (owner === stream.member) member += channel.bufferedAmount;
    }
    return member > this.uploads.limits.bufferedPerMember || room > this.uploads.limits.bufferedPerRoom;
  }

  bufferFreed() {
    const waiters = this.bufferWaiters;
    this.bufferWaiters = [];
    for (const resolve of waiters) resolve();
  }

  // --- receiving ---

  onOffer(member, frame) {
    const id = frame.id;
    if (typeof id === "string" && (this.offers.known(id) || this.incoming.has(id) || this.outgoing.has(id))) return;
    const now = this.now();
    if (!this.offers.admit(member, now)) return;
    let offer;
    let earlier;
    try {
      ({ offer, earlier } = parseOfferFrame(frame, this.maxSize));
    } catch (error) {
      this.offers.count("drop.offer_malformed");
      this.emit({ type: "file-failed", id: String(id ?? "").slice(0, 32), reason: `offer refused: ${error.message}` });
      return;
    }
    this.expire(now);
    if (!this.offers.add(member, offer, now, earlier)) return;
    this.emit({ type: "file-offered", sender: member, offer, earlier });
    this.fillSlots();
    this.arm();
  }

  accept(id) {
    // A person (or the policy) takes an offered file; nothing if it is not kept.
    if (this.incoming.has(id)) return;
    const entry = this.offers.take(id);
    if (!entry) return;
    const incoming = { sender: entry.sender, download: new Download(entry.offer), repairs: 0, channel: null, activeAt: this.now() };
    this.incoming.set(id, incoming);
    if (incoming.download.complete) this.finish(id, incoming); // an empty file
    else this.askFrom(id, incoming);
    this.arm();
  }

  decline(id) {
    const entry = this.offers.take(id);
    if (!entry) return;
    this.offers.settle(id);
    this.sendControl(entry.sender, { t: "file-decline", id });
    this.fillSlots();
  }

  fillSlots() {
    // The accept policy: the oldest waiting offers its rule takes, while slots are free.
    const busy = new Map();
    for (const { sender } of this.incoming.values()) busy.set(sender, (busy.get(sender) ?? 0) + 1);
    const eligible = (offer, earlier) => acceptRuleTakes(this.autoAccept, offer, earlier);
    let id;
    while ((id = this.offers.nextAcceptable(busy, eligible)) !== null) {
      const { sender } = this.offers.get(id);
      this.accept(id);
      busy.set(sender, (busy.get(sender) ?? 0) + 1);
    }
  }

  askFrom(id, incoming) {
    this.sendControl(incoming.sender, { t: "file-accept", id, offset: incoming.download.verified });
  }

  onChannel(member, channel) {
    const id = channel.label.startsWith("file:") ? channel.label.slice(5) : null;
    const incoming = id && this.incoming.get(id);
    if (!incoming || incoming.sender !== member) {
      channel.close();
      return;
    }
    channel.binaryType = "arraybuffer";
    incoming.channel?.close(); // one channel per transfer: what an older one carries is moot
    incoming.channel = channel;
    let chain = Promise.resolve();
    let dead = false; // after a bad chunk, what is still in flight on this channel is moot
    channel.onmessage = (event) => {
      if (typeof event.data === "string") return;
      const frame = new Uint8Array(event.data);
      chain = chain.then(async () => {
        if (dead || this.incoming.get(id) !== incoming || incoming.channel !== channel) return;
        try {
          await incoming.download.receiveChunk(frame);
        } catch (error) {
          dead = true;
          channel.close();
          if (error instanceof ProtocolError) this.repair(id, incoming, error.message);
          else this.fail(id, incoming, `internal error: ${error}`, "error.chunk_handler");
          return;
        }
        incoming.activeAt = this.now();
        const { verified } = incoming.download;
        this.emit({ type: "file-progress", id, done: verified, size: incoming.download.offer.size, sending: false });
        if (incoming.download.complete) {
          dead = true;
          channel.close();
          await this.finish(id, incoming);
        }
      });
    };
  }

  repair(id, incoming, reason) {
    incoming.repairs += 1;
    if (incoming.repairs > MAX_REPAIRS) {
      this.fail(id, incoming, `gave up after ${MAX_REPAIRS} repairs: ${reason}`);
      return;
    }
    this.askFrom(id, incoming);
  }

  fail(id, incoming, reason, counter = null) {
    // End a download: its channel and what it held go, its slot frees.
    this.incoming.delete(id);
    incoming.channel?.close();
    if (counter) this.offers.count(counter);
    this.emit({ type: "file-failed", id, reason });
    this.fillSlots();
  }

  async finish(id, incoming) {
    this.incoming.delete(id);
    this.offers.settle(id);
    let blob;
    try {
      blob = await incoming.download.finish();
    } catch (error) {
      this.emit({ type: "file-failed", id, reason: error.message });
      this.fillSlots();
      return;
    }
    this.sendControl(incoming.sender, { t: "file-done", id });
    this.emit({ type: "file-done", id, sender: incoming.sender, offer: incoming.download.offer, blob });
    this.fillSlots();
  }

  // --- time: offers age, downloads and uploads stall, waiting receivers hear of it ---

  handleTimer() {
    // Forget offers past their age, fail downloads and stop uploads that stalled, remind
    // receivers waiting for an upload slot (the timer calls this; tests with their own
    // clock call it by hand).
    this.timer = this.timerAt = null;
    const now = this.now();
    this.expire(now);
    for (const [id, incoming] of [...this.incoming]) {
      if (this.incoming.get(id) === incoming && now - incoming.activeAt >= this.limits.stall) {
        this.fail(id, incoming, `stalled: no data for ${this.limits.stall} s`, "failed.download_stalled");
      }
    }
    this.fillSlots();
    this.lookAtUploads(now);
    this.uploads.handleTimer(now);
    this.runUploads();
    this.bufferFreed(); // streams waiting on the bounds look again
    this.arm();
  }

  lookAtUploads(now) {
    // Before the stall check: a channel that drained since we last looked took data, even
    // too slowly to fall to LOW_WATER (no event says so); one with nothing buffered and
    // more to send waits for the bounds, not for its receiver.
    for (const stream of this.streams.values()) {
      const buffered = stream.channel.bufferedAmount;
      const waiting = !buffered && stream.channel.readyState === "open" && !stream.sentAll;
      if (buffered < stream.seen || waiting) this.uploads.progress(stream.serial, now);
      stream.seen = buffered;
    }
  }

  expire(now) {
    const deadline = this.offers.nextExpiry();
    if (deadline !== null && deadline <= now) this.offers.expire(now);
    const shared = this.shared.nextExpiry();
    if (shared !== null && shared <= now) for (const id of this.shared.expire(now)) this.outgoing.delete(id);
  }

  arm() {
    // Keep one timer, at the earliest offer expiry, download or upload stall, or file-wait notice.
    let deadline = Math.min(this.offers.nextExpiry() ?? Infinity, this.shared.nextExpiry() ?? Infinity, this.uploads.getTimer() ?? Infinity);
    for (const { activeAt } of this.incoming.values()) deadline = Math.min(deadline, activeAt + this.limits.stall);
    if (deadline === Infinity || (this.timerAt !== null && this.timerAt <= deadline)) return;
    clearTimeout(this.timer);
    this.timerAt = deadline;
    this.timer = setTimeout(() => this.handleTimer(), Math.max(0, deadline - this.now()) * 1000);
  }

  close() {
    clearTimeout(this.timer);
    this.timer = this.timerAt = null;
    this.closed = true; // ending streams starts no others
    for (const stream of this.streams.values()) this.endStream(stream);
    this.streams.clear();
  }

  // --- the control frames ---

  firstAnswer(id, member) {
    // Whether `member`'s file-done or file-decline of a file we offer is its first: told
    // once (a member repeating it would have the page add a line for each), at most
    // limits.members members per file, as peer/transfer.py.
    const answered = this.outgoing.get(id)?.answered;
    if (!answered || answered.has(member) || answered.size >= this.limits.members) return false;
    answered.add(member);
    return true;
  }

  onControl(member, frame) {
    // Handle a file frame from the control channel; false if it is not one.
    const id = String(frame.id);
    if (frame.t === "file-offer") this.onOffer(member, frame);
    else if (frame.t === "file-accept") this.onAccept(member, frame);
    else if (frame.t === "file-wait") {
      // our accept waits for a slot at the sender: not stalled
      const incoming = this.incoming.get(id);
      if (incoming?.sender === member) incoming.activeAt = this.now();
    } else if (frame.t === "file-decline") {
      if (this.firstAnswer(id, member)) this.emit({ type: "file-failed", id, reason: `declined by ${member.slice(0, 12)}` });
    } else if (frame.t === "file-done") {
      if (this.firstAnswer(id, member)) this.emit({ type: "file-done", id, sender: member, offer: this.outgoing.get(id).offer, blob: null });
    } else return false;
    return true;
  }
}
