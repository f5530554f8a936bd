// Files over data channels, as peer/transfer.py (docs/protocol.md 5.2). The
// sender offers on the control channel; a receiver that accepts answers with
// its verified offset; the sender opens `file:<id>` and streams chunk frames,
// pausing above 4 MiB buffered. The browser keeps received files in memory
// (a Blob) and verifies each chunk and the whole file's SHA-256.

import { ProtocolError, hex } from "./bytes.js";
import { randomBytes, sha256 } from "./crypto.js";
import { DEFAULT_CHUNK, Download, chunkFrame, offerFrame, parseOffer } from "./files.js";

export const HIGH_WATER = 4 * 1024 * 1024;
export const LOW_WATER = 1024 * 1024;
export const MAX_REPAIRS = 5;

export class Transfers {
  constructor({ sendControl, openChannel, emit, maxSize, autoAcceptBytes }) {
    this.sendControl = sendControl; // (member, frame) -> bool
    this.openChannel = openChannel; // (member, label) -> RTCDataChannel | null
    this.emit = emit;
    this.maxSize = maxSize;
    this.autoAcceptBytes = autoAcceptBytes;
    this.outgoing = new Map(); // id -> {offer, file}
    this.offers = new Map(); // id -> {sender, offer}
    this.incoming = new Map(); // id -> {sender, download, repairs, channel}
  }

  // --- sending ---

  async offer(file, members) {
    if (file.size > this.maxSize) throw new ProtocolError("too-large", `${file.name} is over the limit of ${this.maxSize} bytes`);
    const digest = hex(await sha256(await file.arrayBuffer()));
    const mime = /^[\w.+-]+\/[\w.+-]+$/.test(file.type) ? file.type : "application/octet-stream";
    const name = (file.name || "file").replace(/[/\\\0]/g, "_");
    const offer = { id: hex(randomBytes(16)), name, size: file.size, mime, sha256: digest, chunk: DEFAULT_CHUNK };
    this.outgoing.set(offer.id, { offer, file });
    for (const member of members) this.sendControl(member, offerFrame(offer));
    return offer;
  }

  memberConnected(member) {
    // A (re)opened link: offers still wanted go again, partial downloads resume.
    for (const { offer } of this.outgoing.values()) this.sendControl(member, offerFrame(offer));
    for (const [id, incoming] of this.incoming) {
      if (incoming.sender === member) this.askFrom(id, incoming);
    }
  }

  onAccept(member, frame) {
    const entry = this.outgoing.get(String(frame.id));
    const offset = frame.offset;
    if (!entry || !Number.isSafeInteger(offset) || offset < 0 || offset > entry.offer.size) return;
    const channel = this.openChannel(member, `file:${entry.offer.id}`);
    if (channel) this.stream(entry, offset, channel).catch((error) => this.emit({ type: "file-failed", id: entry.offer.id, reason: String(error) }));
  }

  async stream({ offer, file }, offset, channel) {
    channel.binaryType = "arraybuffer";
    if (channel.readyState !== "open") {
      await new Promise((resolve, reject) => {
        channel.addEventListener("open", resolve, { once: true });
        channel.addEventListener("close", () => reject(new Error("channel closed before it opened")), { once: true });
      });
    }
    channel.bufferedAmountLowThreshold = LOW_WATER;
    let position = offset;
    while (position < offer.size && channel.readyState === "open") {
      const data = new Uint8Array(await file.slice(position, position + offer.chunk).arrayBuffer());
      if (!data.length) break;
      channel.send(await chunkFrame(position, data));
      position += data.length;
      if (channel.bufferedAmount > HIGH_WATER) {
        await new Promise((resolve) => {
          channel.addEventListener("bufferedamountlow", resolve, { once: true });
          channel.addEventListener("close", resolve, { once: true });
        });
      }
      this.emit({ type: "file-progress", id: offer.id, done: position, size: offer.size, sending: true });
    }
  }

  // --- receiving ---

  onOffer(member, frame) {
    let offer;
    try {
      offer = parseOffer(frame, this.maxSize);
    } catch (error) {
      this.emit({ type: "file-failed", id: String(frame.id ?? "").slice(0, 32), reason: `offer refused: ${error.message}` });
      return;
    }
    if (this.offers.has(offer.id) || this.incoming.has(offer.id) || this.outgoing.has(offer.id)) return;
    this.offers.set(offer.id, { sender: member, offer });
    this.emit({ type: "file-offered", sender: member, offer });
    if (offer.size <= this.autoAcceptBytes) this.accept(offer.id);
  }

  accept(id) {
    const entry = this.offers.get(id);
    if (!entry || this.incoming.has(id)) return;
    const incoming = { sender: entry.sender, download: new Download(entry.offer), repairs: 0, channel: null };
    this.incoming.set(id, incoming);
    this.askFrom(id, incoming);
  }

  decline(id) {
    const entry = this.offers.get(id);
    if (entry) this.sendControl(entry.sender, { t: "file-decline", id });
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
    incoming.channel = channel;
    let chain = Promise.resolve();
    let dead = false; // after a bad chunk, what is still in flight on this channel is moot
    channel.onmessage = (event) => {
      if (typeof event.data === "string") return;
      const frame = new Uint8Array(event.data);
      chain = chain.then(async () => {
        if (dead || this.incoming.get(id) !== incoming) return;
        try {
          await incoming.download.receiveChunk(frame);
        } catch (error) {
          dead = true;
          channel.close();
          this.repair(id, incoming, error.message);
          return;
        }
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
      this.incoming.delete(id);
      this.emit({ type: "file-failed", id, reason: `gave up after ${MAX_REPAIRS} repairs: ${reason}` });
      return;
    }
    this.askFrom(id, incoming);
  }

  async finish(id, incoming) {
    this.incoming.delete(id);
    let blob;
    try {
      blob = await incoming.download.finish();
    } catch (error) {
      this.emit({ type: "file-failed", id, reason: error.message });
      return;
    }
    this.sendControl(incoming.sender, { t: "file-done", id });
    this.emit({ type: "file-done", id, sender: incoming.sender, offer: incoming.download.offer, blob });
  }

  // --- the control frames ---

  onControl(member, frame) {
    // Handle a file frame from the control channel; false if it is not one.
    const id = String(frame.id);
    if (frame.t === "file-offer") this.onOffer(member, frame);
    else if (frame.t === "file-accept") this.onAccept(member, frame);
    else if (frame.t === "file-decline") {
      if (this.outgoing.has(id)) this.emit({ type: "file-failed", id, reason: `declined by ${member.slice(0, 12)}` });
    } else if (frame.t === "file-done") {
      if (this.outgoing.has(id)) this.emit({ type: "file-done", id, sender: member, offer: this.outgoing.get(id).offer, blob: null });
    } else return false;
    return true;
  }
}
