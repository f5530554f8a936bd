// pagemesh on any web page, with one tag (docs/widget.md):
//
//   <script src="https://NODE/embed.js" referrerpolicy="no-referrer" async></script>
//
// draws a chat button in a corner of the page; the first click opens the chat in
// an iframe served by NODE (/widget), which joins the room of this page (or of
// this site) and chats with whoever else is on it. Options, on the tag:
//
//   data-scope="page"            the room of this page (default), or "site": one room
//                                for every page of this origin
//   data-position="bottom-right" (default) or "bottom-left"
//   data-accent="#2459c4"        the button's colour (#rgb or #rrggbb); the chat takes
//                                it too when text in it reads on white (4.5:1)
//   data-node="https://NODE"     the node, when the site serves its own copy of this
//                                file (default: the origin this script came from)
//
// The page's address goes to the iframe by postMessage, to the node's origin only,
// after the iframe says it is ready; messages are taken from that iframe and that
// origin only. The iframe hashes the address: the node never learns it. Nothing
// connects anywhere before the button is first pressed.
//
// A classic script that leaves no global behind but one symbol (so that a second
// copy of the tag adds no second button); everything it draws lives in a shadow
// root and is styled through a constructed style sheet, which a host page's
// style-src does not govern.

(() => {
  const script = document.currentScript;
  const ONCE = Symbol.for("pagemesh.widget");
  if (!script?.src || window[ONCE]) return;
  window[ONCE] = true;

  const options = script.dataset;
  // The node: data-node on a copy the site serves itself, else where this script came from.
  let NODE;
  try {
    const node = new URL(options.node ?? script.src);
    if (node.protocol !== "https:" && node.protocol !== "http:") return;
    NODE = node.origin;
  } catch {
    return; // data-node is no address: no button rather than a frame of the wrong origin
  }
  const scope = options.scope === "site" ? "site" : "page";
  const side = options.position === "bottom-left" ? "left" : "right";
  const accent = /^#(?:[0-9a-f]{3}){1,2}$/i.test(options.accent ?? "") ? options.accent : "#2459c4";
  const BUBBLE = "M4 5h16v11H9l-5 4z";
  const CROSS = "M6 6l12 12M18 6L6 18";
  const LABEL = scope === "site" ? "Chat with people on this site" : "Chat with people on this page";

  function luminance(colour) {
    // WCAG 2.x relative luminance of #rgb or #rrggbb.
    const digits = colour.length === 4 ? [...colour.slice(1)].map((d) => d + d) : colour.slice(1).match(/../g);
    const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    const [r, g, b] = digits.map((d) => lin(parseInt(d, 16) / 255));
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  // White on the accent when it reads at 4.5:1 (WCAG AA), else black, which then does.
  const ink = 1.05 / (luminance(accent) + 0.05) >= 4.5 ? "#ffffff" : "#000000";

  const STYLE = `
    :host { all: initial; }
    .launcher {
      position: fixed; bottom: 20px; ${side}: 20px; z-index: 2147483000;
      width: 56px; height: 56px; padding: 0; border: 2px solid #ffffff; border-radius: 50%;
      background: ${accent}; color: ${ink}; cursor: pointer;
      display: grid; place-items: center; box-shadow: 0 4px 14px rgb(0 0 0 / 28%);
    }
    .launcher:focus-visible { outline: 3px solid ${accent}; outline-offset: 3px; }
    .launcher svg { width: 28px; height: 28px; fill: none; stroke: currentColor; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
    .badge {
      position: absolute; top: -4px; ${side === "right" ? "left" : "right"}: -4px; min-width: 22px; height: 22px;
      padding: 0 6px; border-radius: 11px; border: 2px solid #ffffff; box-sizing: border-box;
      background: #b42318; color: #ffffff; font: 700 12px/18px system-ui, sans-serif; text-align: center;
    }
    .badge[hidden], .panel[hidden] { display: none; }
    .panel {
      position: fixed; bottom: 88px; ${side}: 20px; z-index: 2147483000;
      width: min(400px, calc(100vw - 40px)); height: min(620px, calc(100vh - 108px));
      border-radius: 12px; overflow: hidden; background: #ffffff;
      box-shadow: 0 8px 32px rgb(0 0 0 / 30%); border: 1px solid rgb(0 0 0 / 15%);
    }
    .panel iframe { display: block; width: 100%; height: 100%; border: 0; }
    /* A phone: the chat takes the whole screen and closes from its own header. */
    @media (max-width: 520px), (max-height: 560px) {
      .panel { inset: 0; width: 100vw; height: 100vh; height: 100dvh; border-radius: 0; border: 0; }
      .launcher.open { display: none; }
    }
  `;

  const state = { frame: null, ready: false, sent: null, open: false };
  const holder = document.createElement("div");
  holder.setAttribute("data-pagemesh", "widget");
  const root = holder.attachShadow({ mode: "open" });
  style(root, STYLE);

  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.title = LABEL;
  launcher.setAttribute("aria-label", LABEL);
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "pagemesh-panel");
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  badge.setAttribute("aria-hidden", "true");
  launcher.append(icon(BUBBLE), badge);

  const panel = document.createElement("div");
  panel.className = "panel";
  panel.id = "pagemesh-panel";
  panel.hidden = true;
  root.append(panel, launcher);

  launcher.addEventListener("click", () => (state.open ? close() : open()));
  root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.open) close();
  });
  window.addEventListener("message", fromFrame);
  // A single-page site changes its address without a new page: back and forward
  // everywhere; pushState and replaceState too where the Navigation API tells (Chromium).
  window.addEventListener("popstate", sendRoom);
  window.navigation?.addEventListener?.("currententrychange", sendRoom);

  if (document.body) document.body.append(holder);
  else document.addEventListener("DOMContentLoaded", () => document.body.append(holder), { once: true });

  function style(target, text) {
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(text);
      target.adoptedStyleSheets = [sheet];
    } catch {
      const element = document.createElement("style"); // browsers without constructed sheets
      element.textContent = text;
      target.append(element);
    }
  }

  function icon(shape) {
    // A speech bubble, or a cross while the chat is open; drawn here, nothing is fetched.
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", shape);
    svg.append(path);
    return svg;
  }

  function drawn(open) {
    launcher.classList.toggle("open", open);
    launcher.setAttribute("aria-expanded", String(open));
    launcher.firstChild.replaceWith(icon(open ? CROSS : BUBBLE));
  }

  function open() {
    if (!state.frame) {
      const frame = document.createElement("iframe");
      frame.src = `${NODE}/widget`;
      frame.title = LABEL;
      frame.referrerPolicy = "no-referrer"; // the node is not told which page framed it
      frame.allow = "clipboard-write";
      panel.append(frame);
      state.frame = frame;
    }
    state.open = true;
    panel.hidden = false;
    drawn(true);
    unread(0);
    tell({ pagemesh: "shown" });
    state.frame.focus();
  }

  function close() {
    state.open = false;
    panel.hidden = true;
    drawn(false);
    tell({ pagemesh: "hidden" });
    launcher.focus();
  }

  function unread(count) {
    const n = Number.isSafeInteger(count) && count > 0 ? count : 0;
    badge.hidden = n === 0;
    badge.textContent = n > 9 ? "9+" : String(n);
    const label = n ? `${LABEL} (${n} new ${n === 1 ? "message" : "messages"})` : LABEL;
    launcher.setAttribute("aria-label", label);
  }

  function tell(message) {
    // Only to the iframe this script made, only while it holds the node's page.
    if (state.ready) state.frame.contentWindow.postMessage(message, NODE);
  }

  function here() {
    // The address the room is of: no fragment (it names a place in the page, and may
    // carry a token); only the origin for a site's room.
    return scope === "site" ? `${location.origin}/` : location.href.split("#")[0];
  }

  function sendRoom() {
    const url = here();
    if (!state.ready || url === state.sent) return;
    state.sent = url;
    tell({ pagemesh: "room", url, scope, accent });
  }

  function fromFrame(event) {
    if (event.origin !== NODE || !state.frame || event.source !== state.frame.contentWindow) return;
    const data = event.data;
    if (data === null || typeof data !== "object") return;
    if (data.pagemesh === "ready") {
      // (again after the iframe reloads: it has forgotten everything)
      state.ready = true;
      state.sent = null;
      sendRoom();
      tell({ pagemesh: state.open ? "shown" : "hidden" });
    } else if (data.pagemesh === "close") {
      close();
    } else if (data.pagemesh === "unread") {
      if (!state.open) unread(data.count);
    }
  }
})();
