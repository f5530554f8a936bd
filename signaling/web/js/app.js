// The page a person sees: join a page's room, chat, share files, see who is
// here and how each connection goes (direct or through a relay), which group
// of the page one sits in and how many people the page has, move to another
// group or to a friend's. Everything here is presentation; the protocol lives
// in peer.js.
//
// Groups are the protocol's layers counted from 1, as `pagemesh chat` shows
// them: group 1 is layer 0. `?group=N` and `?friend=KEY` in the page's address
// sit down there when joining (an invite link carries `friend`).

import { MAX_LAYER, Peer, canonicalUrl } from "./peer.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const home = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
const nodes = [...params.getAll("node"), home];

// connectedAt: per member, when its link first opened (ms since the page began loading)
// joinStartedAt: when the last join began (same clock)
const ui = { peer: null, room: null, files: new Map(), statusLog: [], connectedAt: {}, joinStartedAt: null, seatNode: null, census: null };
window.pagemesh = ui; // for people poking at the console, and for the tests

function short(key) {
  return key.slice(0, 8);
}

function who(key) {
  if (ui.peer && key === ui.peer.keyHex) return ui.peer.name || "you";
  return ui.room?.names.get(key) ?? short(key);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function banner(text) {
  $("banner").textContent = text ?? "";
  $("banner").hidden = !text;
}

function size(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// --- the transcript, in the room's total order (lamport, author) ---

function place(li, lamport, author) {
  // Insert keeping (lamport, author) order; notes sort after messages of their lamport.
  li.dataset.lamport = lamport;
  li.dataset.order = author;
  const list = $("messages");
  const after = [...list.children].find(
    (other) => +other.dataset.lamport > lamport || (+other.dataset.lamport === lamport && other.dataset.order > author),
  );
  list.insertBefore(li, after ?? null);
  if (!after) list.scrollTop = list.scrollHeight;
}

function whoSpan(key) {
  return el("span", { className: "who", dataset: { key } }, who(key));
}

function renamed(key) {
  memberRow(key);
  for (const span of document.querySelectorAll(`#messages .who[data-key="${key}"]`)) span.textContent = who(key);
}

function note(text, extra = {}, ...children) {
  const li = el("li", { className: "note", ...extra }, ...children, text);
  place(li, ui.room ? ui.room.core.lamport : 0, "~");
  return li;
}

function showMessage({ env, mine }) {
  if (document.querySelector(`#messages li[data-id="${env.author}:${env.seq}"]`)) return;
  const when = new Date(env.ts).toLocaleTimeString();
  const li = el(
    "li",
    { className: mine ? "msg mine" : "msg", dataset: { id: `${env.author}:${env.seq}`, author: env.author, seq: env.seq } },
    whoSpan(env.author),
    el("span", { className: "body" }, env.body),
    el("span", { className: "when" }, when),
  );
  place(li, env.lamport, env.author);
}

// --- members ---

function memberRow(key) {
  let li = document.querySelector(`#members li[data-key="${key}"]`);
  if (!li) {
    li = el("li", { dataset: { key } }, el("span", { className: "name" }), el("span", { className: "path", dataset: { path: "connecting" } }, "connecting"));
    $("members").append(li);
  }
  li.querySelector(".name").textContent = who(key);
  return li;
}

function setPath(key, path) {
  const badge = memberRow(key).querySelector(".path");
  badge.dataset.path = path ?? "connecting";
  badge.textContent = path ?? "connecting";
}

function renderTotal() {
  const count = ui.room ? ui.room.members.size + 1 : 0;
  $("total").textContent = ui.room ? `(${count})` : "";
}

// --- groups: where we sit on a busy page (group N is layer N - 1) ---

const number = (n) => n.toLocaleString();
const people = (n) => `${number(n)} ${n === 1 ? "person" : "people"}`;

function seatText({ layer, layers, total }) {
  // "You are in group 7 of 412 · about 9,800 people on this page" (estimates).
  const group = layer + 1;
  const about = total === null ? "" : ` · about ${people(total)} on this page`;
  return `You are in group ${number(group)} of ${number(Math.max(layers ?? group, group))}${about}`;
}

function renderSeat() {
  const room = ui.room;
  $("seat").hidden = !room || room.layer === null;
  if ($("seat").hidden) return;
  $("group").textContent = seatText(room);
  $("group").dataset.layer = room.layer;
  $("my-key").textContent = ui.peer.keyHex;
}

function groupsNote(text, kind = "info") {
  // What the groups panel has to say: progress, a copied key, or a refusal ("problem").
  $("groups-note").textContent = text;
  $("groups-note").dataset.kind = kind;
  $("groups-note").hidden = !text;
}

function renderGroups(picture) {
  const rows = [...picture.counts]
    .sort((a, b) => a.layer - b.layer)
    .map(({ layer, count }) => {
      const mine = layer === ui.room.layer;
      const group = `group ${number(layer + 1)}`;
      const action = mine
        ? el("span", { className: "here" }, "you are here")
        : el(
            "button",
            { type: "button", className: "move", "aria-label": `Move to ${group} (${people(count)})`, onclick: () => moveTo(layer) },
            "Move here",
          );
      return el(
        "li",
        { className: mine ? "mine" : "", dataset: { layer } },
        el("span", { className: "group-name" }, `Group ${number(layer + 1)}`),
        el("span", { className: "group-count" }, people(count)),
        action,
      );
    });
  const focused = $("group-list").contains(document.activeElement);
  $("group-list").replaceChildren(...rows);
  if (focused) $("groups").querySelector("summary").focus(); // its button is gone: stay in the panel
}

async function refreshGroups() {
  // Ask the node for a fresh picture: the sentence and the list follow it.
  const room = ui.room;
  if (!room) return;
  $("group-list").setAttribute("aria-busy", "true");
  try {
    const picture = await room.census();
    if (room !== ui.room) return;
    ui.census = picture;
    renderSeat();
    renderGroups(picture);
  } catch (error) {
    groupsNote(`Could not list the groups: ${error.message}`, "problem");
  } finally {
    $("group-list").removeAttribute("aria-busy");
  }
}

function refusal(error, where) {
  if (error.code === "layer-full") return `${where} is full`;
  if (error.code === "unknown-peer") return "Nobody with that key is on this page";
  return `Could not move: ${error.message}`;
}

async function move(how, where) {
  // A move to another group (`how(room)`), shown while the node answers.
  const room = ui.room;
  if (!room) return;
  const buttons = [...document.querySelectorAll("#groups button")];
  for (const button of buttons) button.disabled = true;
  groupsNote(`Moving to ${where}…`);
  try {
    await how(room);
    groupsNote("");
  } catch (error) {
    groupsNote(refusal(error, where.charAt(0).toUpperCase() + where.slice(1)), "problem");
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function moveTo(layer) {
  return move((room) => room.move(layer), `group ${number(layer + 1)}`);
}

function sitWith(key) {
  return move((room) => room.sitWith(key), "your friend's group");
}

// --- files ---

function fileRow(id, name, bytes, text) {
  let li = ui.files.get(id);
  if (!li) {
    li = note("", { dataset: { file: id } });
    li.classList.add("file");
    ui.files.set(id, li);
  }
  li.replaceChildren(el("span", {}, `${text} ${name} (${size(bytes)}) `));
  return li;
}

function onFileEvent(event) {
  const room = ui.room;
  if (event.type === "file-offered") {
    const { offer, sender } = event;
    const li = fileRow(offer.id, offer.name, offer.size, `${who(sender)} offers`);
    if (offer.size > ui.peer.config.autoAcceptBytes) {
      li.append(
        el("button", { type: "button", className: "accept", onclick: () => room.acceptFile(offer.id) }, "Accept"),
        el("button", { type: "button", className: "decline", onclick: () => room.declineFile(offer.id) }, "Decline"),
      );
    }
  } else if (event.type === "file-progress") {
    const li = ui.files.get(event.id);
    if (!li) return;
    let bar = li.querySelector("progress");
    if (!bar) li.append((bar = el("progress", { max: event.size })));
    bar.value = event.done;
  } else if (event.type === "file-done" && event.blob) {
    const { offer, sender, blob, id } = event;
    const url = URL.createObjectURL(blob);
    const li = fileRow(id, offer.name, offer.size, `${who(sender)} shared`);
    const link = el("a", { href: url, download: offer.name, className: "download", dataset: { sha256: offer.sha256, name: offer.name } }, "download");
    li.append(link);
    if (offer.mime.startsWith("image/")) li.append(el("img", { src: url, alt: offer.name }));
  } else if (event.type === "file-done") {
    const li = ui.files.get(event.id);
    li?.append(el("span", { className: "delivered", dataset: { to: event.sender } }, ` ✓ ${who(event.sender)}`));
  } else if (event.type === "file-failed") {
    const li = ui.files.get(event.id) ?? note("");
    li.append(el("span", { className: "failed" }, ` failed: ${event.reason}`));
  }
}

// --- events from the peer ---

function onEvent(event) {
  switch (event.type) {
    case "status":
      ui.statusLog.push(`${event.state} ${event.message ?? event.node ?? ""}`);
      $("status").textContent = event.state === "connected" ? `connected to ${event.node}` : `${event.state}: ${event.message ?? event.node ?? ""}`;
      $("status").dataset.state = event.state;
      if (event.state === "connected") banner(null);
      else if (["lost", "retrying", "replaced"].includes(event.state)) banner(event.message);
      break;
    case "message":
      showMessage(event);
      break;
    case "member-joined":
      memberRow(event.key);
      note("joined", {}, whoSpan(event.key));
      renderTotal();
      break;
    case "member-left":
      document.querySelector(`#members li[data-key="${event.key}"]`)?.remove();
      note("left", { dataset: { left: event.key } }, whoSpan(event.key));
      renderTotal();
      break;
    case "connected":
      ui.connectedAt[event.key] ??= performance.now();
      setPath(event.key, event.path);
      break;
    case "unreachable":
      setPath(event.key, "unreachable");
      note(event.message, { className: "note problem", dataset: { unreachable: event.key } });
      break;
    case "path":
      ui.statusLog.push(`path ${event.key.slice(0, 8)} ${event.path}`);
      setPath(event.key, event.path);
      break;
    case "disconnected":
      setPath(event.key, null);
      break;
    case "profile":
      renamed(event.key);
      break;
    case "gap":
      note(`${event.last - event.first + 1} messages of ${who(event.author)} could not be recovered`);
      break;
    case "rejoined":
      if (event.room === ui.room && event.node !== ui.seatNode) note(`moved to node ${event.node}`);
      if (event.room === ui.room) ui.seatNode = event.node;
      break;
    case "moved":
      if (event.room === ui.room) note(`you moved to group ${number(event.layer + 1)}`, { className: "note moved" });
      break;
    case "seated":
      if (event.room !== ui.room) break;
      renderSeat();
      if ($("groups").open) refreshGroups();
      break;
    case "problem":
    case "node-error":
      console.warn("pagemesh:", event.message);
      if (event.type === "problem") $("status").textContent = event.message;
      break;
    default:
      if (event.type.startsWith("file-")) onFileEvent(event);
  }
}

// --- the page's controls ---

function seatWish() {
  // Where the page's address asks to sit: ?group=N (from 1) or ?friend=KEY.
  const group = Number(params.get("group"));
  if (Number.isSafeInteger(group) && group >= 1 && group <= MAX_LAYER + 1) return { layer: group - 1 };
  const friend = (params.get("friend") ?? "").toLowerCase();
  if (/^[0-9a-f]{64}$/.test(friend)) return { friend };
  return {};
}

async function join(pageUrl, wish = {}) {
  let canonical;
  try {
    canonical = canonicalUrl(pageUrl);
  } catch (error) {
    banner(error.message);
    return;
  }
  if (ui.room) {
    await ui.peer.leave(ui.room);
    $("members").replaceChildren();
    $("messages").replaceChildren();
    ui.files.clear();
  }
  ui.room = null;
  renderSeat();
  $("room-title").textContent = `Joining ${canonical}…`;
  ui.joinStartedAt = performance.now();
  try {
    try {
      ui.room = await ui.peer.join(canonical, wish);
    } catch (error) {
      if (!["layer-full", "unknown-peer"].includes(error.code)) throw error;
      // the group asked for has no seat, or the friend is not here: sit anywhere
      banner(wish.friend ? `${refusal(error, "your friend's group")}; you sit in another group` : `${refusal(error, `group ${wish.layer + 1}`)}; you sit in another group`);
      ui.room = await ui.peer.join(canonical);
    }
  } catch (error) {
    banner(`could not join: ${error.message}`);
    $("room-title").textContent = "No room yet";
    return;
  }
  ui.seatNode = ui.peer.node?.nodeUrl ?? null;
  $("room-title").textContent = canonical;
  $("room-url").value = canonical;
  history.replaceState(null, "", `?room=${encodeURIComponent(canonical)}`);
  for (const id of ["text", "file", "send"]) $(id).disabled = false;
  $("text").placeholder = "Say something";
  memberRow(ui.peer.keyHex).classList.add("me");
  setPath(ui.peer.keyHex, "you");
  for (const env of ui.room.transcript()) showMessage({ env, mine: env.author === ui.peer.keyHex });
  for (const key of ui.room.members) memberRow(key);
  renderTotal();
  renderSeat();
  if ($("groups").open) refreshGroups();
  $("text").focus();
}

async function sendFiles(files) {
  for (const file of files) {
    try {
      const offer = await ui.room.sendFile(file);
      const li = fileRow(offer.id, offer.name, offer.size, "you shared");
      if (offer.mime.startsWith("image/")) li.append(el("img", { src: URL.createObjectURL(file), alt: offer.name }));
    } catch (error) {
      note(`could not share ${file.name}: ${error.message}`);
    }
  }
}

async function copy(text, done) {
  try {
    await navigator.clipboard.writeText(text);
    groupsNote(done);
  } catch {
    groupsNote(`Copy this: ${text}`);
  }
}

async function main() {
  try {
    // ?relay=only: every connection through the node's TURN relay (to try what a strict NAT sees)
    const config = params.get("relay") === "only" ? { relayOnly: true } : {};
    ui.peer = await Peer.open(nodes, { name: params.get("name"), config });
  } catch (error) {
    banner(error.message);
    return;
  }
  ui.peer.on(onEvent);
  $("key").textContent = short(ui.peer.keyHex);
  $("name").value = ui.peer.name;
  $("name").addEventListener("change", async () => {
    await ui.peer.setName($("name").value.trim());
    if (ui.room) renamed(ui.peer.keyHex);
  });
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    join($("room-url").value);
  });
  $("compose").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !ui.room) return;
    $("text").value = "";
    try {
      await ui.room.send(text);
    } catch (error) {
      banner(error.message);
      $("text").value = text;
    }
  });
  $("file").addEventListener("change", () => {
    sendFiles([...$("file").files]);
    $("file").value = "";
  });
  const chat = $("chat");
  chat.addEventListener("dragover", (event) => event.preventDefault());
  chat.addEventListener("drop", (event) => {
    event.preventDefault();
    if (ui.room) sendFiles([...event.dataTransfer.files]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (ui.room && files.length) sendFiles(files);
  });
  $("groups").addEventListener("toggle", () => {
    if ($("groups").open) refreshGroups();
  });
  $("groups-refresh").addEventListener("click", () => refreshGroups());
  $("move-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const group = Number($("move-group").value);
    if (!Number.isSafeInteger(group) || group < 1 || group > MAX_LAYER + 1) {
      groupsNote(`Groups are numbered 1 to ${number(MAX_LAYER + 1)}`, "problem");
      return;
    }
    moveTo(group - 1);
  });
  $("friend-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("friend-key").value.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(key)) {
      groupsNote("A key is 64 hex digits: ask your friend to copy theirs from this panel", "problem");
      return;
    }
    sitWith(key);
  });
  $("copy-key").addEventListener("click", () => copy(ui.peer.keyHex, "Your key is copied"));
  $("copy-invite").addEventListener("click", () => {
    const invite = new URL(location.href);
    invite.search = new URLSearchParams({ room: ui.room.url, friend: ui.peer.keyHex }).toString();
    copy(invite.href, "An invite link to your group is copied");
  });
  ui.peer.start();
  if (params.get("room")) {
    $("room-url").value = params.get("room");
    await join(params.get("room"), seatWish());
  }
  document.body.dataset.ready = "true";
}

ui.ready = main();
