// The chat a site embeds (docs/widget.md): chat.js in the iframe that embed.js opens
// on the site's page. Its room is the one that page names by postMessage, taken as
// hostlink.js rules (from the parent window only, its origin pinned, a room of its
// own origin), canonicalised and hashed here as the page at `/` does: the node sees
// the room's hash and nothing of the page. This frame's own address never picks a
// room (any window may navigate a frame; only the parent may speak to it).
//
// What the widget tells the parent (to its pinned origin): "ready" once it listens
// (to "*": it knows no origin yet, and says nothing else), "close" when Escape or the
// close button asks, "unread" with the count of messages that came while hidden.

import { banner, join, startChat, ui } from "./chat.js";
import { HostLink } from "./hostlink.js";
import { readContent } from "./messaging.js";
import { Peer } from "./peer.js";
import { readsOnWhite } from "./people.js";

const $ = (id) => document.getElementById(id);
const framed = window.parent !== window;
const MAX_WARNINGS = 5; // refusals are counted; the console hears of the first few

const widget = {
  link: new HostLink(),
  wanted: null, // the room the host page names (canonical URL)
  shown: false,
  unread: 0,
  warned: 0,
};
ui.widget = widget; // window.pagemesh.widget, for the tests

function tell(message) {
  if (framed && widget.link.origin !== null) window.parent.postMessage(message, widget.link.origin);
}

function fromParent(event) {
  const said = widget.link.receive({ fromParent: framed && event.source === window.parent, origin: event.origin, data: event.data });
  if (said === null) {
    if (widget.warned++ < MAX_WARNINGS) {
      const { reason, origin } = widget.link.lastRefusal;
      console.warn(`pagemesh widget: a message from ${origin} refused (${reason})`);
    }
    return;
  }
  if (said.type === "room") {
    if (said.accent && readsOnWhite(said.accent)) document.documentElement.style.setProperty("--accent", said.accent);
    document.querySelector("header h1").textContent = said.scope === "site" ? "Chat on this site" : "Chat on this page";
    widget.wanted = said.room;
    if (ui.peer && said.room !== ui.room?.url) enter(said.room);
  } else {
    show(said.type === "shown");
  }
}

function show(on) {
  widget.shown = on;
  if (!on) return;
  widget.unread = 0;
  tell({ pagemesh: "unread", count: 0 });
  (ui.room ? $("text") : ($("rejoin") ?? $("widget-close"))).focus();
}

function hint(text, { again = false, joining = false } = {}) {
  // What the transcript shows while there is no room: joining (and what the node learns
  // of it), left or refused (with a button back), or why there is no chat at all.
  const box = $("empty-hint");
  box.replaceChildren(el("p", {}, el("strong", {}, text)));
  if (again) box.append(el("button", { type: "button", id: "rejoin", onclick: () => enter(widget.wanted) }, "Join again"));
  if (joining) box.append(el("p", { className: "hint" }, "Only a hash of this page's address leaves your browser; messages go straight to the others here."));
}

function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function enter(room) {
  if (!room) return;
  hint("Joining this page's chat…", { joining: true });
  await join(room);
  if (!ui.room) hint("Not in this page's chat", { again: true });
}

function counted(event) {
  // A member's message while the panel is closed: the launcher shows how many.
  if (event.type !== "message" || event.mine || widget.shown || event.room !== ui.room) return;
  if (readContent(event.env)?.type !== "chat") return;
  widget.unread += 1;
  tell({ pagemesh: "unread", count: widget.unread });
}

function closeOnEscape(event) {
  // Escape closes the panel, unless something inside the chat takes it first (the
  // emoji picker, a reply being written, a dialog): looked at before they run.
  if (event.key !== "Escape" || event.isComposing) return;
  if (document.querySelector("#messages .picker, dialog[open]") || ui.replyTo) return;
  tell({ pagemesh: "close" });
}

// What the chat asks of the page holding it: here, the host page is the address.
const host = {
  showRoom() {}, // the host page's own address says where the chat is
  inviteLink(fields) {
    return fields.room; // the host page itself: the chat opens there
  },
  left() {
    hint("You left this page's chat", { again: true });
    $("rejoin").focus();
  },
};

function dress() {
  // The page's header becomes the panel's title bar: a title, the name, a close button.
  document.querySelector("header h1").textContent = "Chat on this page";
  const close = el("button", { type: "button", id: "widget-close", className: "quiet", title: "Close the chat", onclick: () => tell({ pagemesh: "close" }) }, "✕");
  close.setAttribute("aria-label", "Close the chat");
  document.querySelector("header").append(close);
}

async function main() {
  dress();
  let peer;
  try {
    peer = await Peer.open([`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`]);
  } catch (error) {
    // No WebCrypto (nor WebRTC) in a frame whose page is not a secure context.
    const insecure = error.code === "insecure-context";
    banner(insecure ? "This chat works on pages served over HTTPS only, and this one is not." : error.message);
    hint(insecure ? "No chat on this page" : "The chat could not start");
    document.body.dataset.ready = "true";
    return;
  }
  hint("Joining this page's chat…", { joining: true });
  startChat(peer, host);
  peer.on(counted);
  if (widget.wanted) await enter(widget.wanted);
  document.body.dataset.ready = "true";
}

window.addEventListener("message", fromParent);
window.addEventListener("keydown", closeOnEscape, true);
if (framed) window.parent.postMessage({ pagemesh: "ready" }, "*");
ui.ready = main();
