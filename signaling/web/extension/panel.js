// The extension's panel: the chat (chat.js) in the room of the page the browser
// shows. It follows the active tab of its window: switching tabs or navigating
// leaves the old room and joins the new one. Opened as an ordinary tab
// (chrome-extension://ID/extension/panel.html) it follows the most recently active
// web page of its window instead of itself.
//
// The page's URL is canonicalised and hashed here (rooms.js, through peer.js); the
// node gets the room's hash as from the page a node serves, nothing of the URL.
// Whether to join at all is sitepolicy.js's decision (private windows, pages
// without a room, the built-in list, local addresses, the person's switch per
// site). The panel holds the peer, its node connection and its WebRTC links: a
// service worker has no RTCPeerConnection (docs/extension.md). One panel at a time
// holds the identity (a Web Lock); another waits until it closes.

import { badgeText } from "./badge.js";
import { fragmentFor } from "../js/address.js";
import { banner, join, leave, startChat, ui } from "../js/chat.js";
import { start as startEarly } from "../js/early.js";
import { Peer } from "../js/peer.js";
import { MAX_LEARNED, loadSettings, saveSettings } from "./settings.js";
import { decide, switchSite } from "./sitepolicy.js";

const $ = (id) => document.getElementById(id);
const LOCK = "pagemesh-panel"; // held by the panel that holds the identity
const RECONNECT_MS = 1000; // at most one new port to the service worker per second

const panel = {
  settings: null,
  windowId: null,
  selfTabId: null, // this page's own tab when it is opened as a tab; null in the side panel
  tab: null, // {id, url, incognito}: the tab followed
  decision: null, // sitepolicy.js's word on that tab's page
  wanted: null, // the canonical URL whose room the panel should be in, or null
  dirty: false, // `wanted` changed since the running settle looked
  settling: null, // the running settle(), while there is one
  asked: 0, // followActive() calls: a slower answer gives way to a newer question
  port: null, // to the service worker, for the toolbar badge
  badge: { tabId: null, text: "" }, // what the badge shows now
  reconnect: null,
};
ui.panel = panel; // window.pagemesh.panel: for the tests and the console

// --- which tab, which room ---

function isWeb(url) {
  return /^https?:/i.test(url ?? "");
}

export function pickTab(tabs, selfTabId, ours) {
  // The window's active tab, unless that is this page or another of the extension's
  // own (`ours`: their address prefix; options, another panel): then the web page
  // most recently active.
  const active = tabs.find((tab) => tab.active);
  if (active && active.id !== selfTabId && !(active.url ?? "").startsWith(ours)) return active;
  const others = tabs.filter((tab) => tab.id !== selfTabId && isWeb(tab.url));
  others.sort((a, b) => (b.lastAccessed ?? 0) - (a.lastAccessed ?? 0));
  return others[0] ?? null;
}

async function followActive() {
  const asked = ++panel.asked;
  const tabs = await chrome.tabs.query({ windowId: panel.windowId });
  if (asked !== panel.asked) return; // a later event asked again; its answer is fresher
  follow(pickTab(tabs, panel.selfTabId, chrome.runtime.getURL("")));
}

function follow(tab) {
  const before = panel.tab?.id ?? null;
  panel.tab = tab ? { id: tab.id, url: tab.url || tab.pendingUrl || "", incognito: tab.incognito } : null;
  if (before !== null && before !== panel.tab?.id) showBadge(before, "");
  reconsider();
}

function reconsider() {
  const tab = panel.tab;
  panel.decision = tab
    ? decide(tab.url, { incognito: tab.incognito, allowLocal: panel.settings.allowLocal, sites: panel.settings.sites })
    : { room: null, site: null, reason: "no-tab", text: "No web page in this window" };
  panel.wanted = panel.decision.room;
  render();
  settle();
}

function settle() {
  // One join or leave at a time; after each, the panel goes where it wants to be now.
  // A join that failed is tried again when something changes (a tab, a switch).
  panel.dirty = true;
  if (!panel.settling && ui.peer) panel.settling = run();
  return panel.settling;
}

async function run() {
  await null; // settle() holds this run before it can end
  try {
    while (panel.dirty) {
      panel.dirty = false;
      const target = panel.wanted;
      if (target === (ui.room?.url ?? null)) continue;
      if (target === null) await leave();
      else await join(target);
      render();
    }
  } finally {
    panel.settling = null; // in the same turn as the last look at `dirty`
  }
}

// --- what the panel shows ---

function peopleHere(room) {
  // The page's people: the node's estimate when the page has several groups, else
  // those in ours (us included).
  const group = room.members.size + 1;
  return room.layers > 1 && room.total !== null ? Math.max(room.total, group) : group;
}

function render() {
  const decision = panel.decision;
  if (!decision) return;
  const room = ui.room;
  const joined = room !== null && room.url === panel.wanted;
  const state = joined ? "joined" : panel.wanted ? "joining" : decision.reason;
  const count = joined ? peopleHere(room) : 0;
  const here = $("here");
  here.dataset.state = state;
  here.dataset.room = joined ? room.url : "";
  here.dataset.count = String(count);
  $("here-site").textContent = decision.site ?? "No page";
  $("here-count").textContent = joined ? `${count} ${count === 1 ? "person" : "people"} here` : "";
  $("here-text").textContent = joined ? `You are in the room of ${room.url}` : state === "joining" ? `Joining the room of ${panel.wanted}…` : decision.text;
  $("site-row").hidden = decision.reason !== "on" && decision.reason !== "off"; // the list and the rest are not the person's to switch
  $("site-switch").checked = decision.reason !== "off";
  $("site-name").textContent = decision.site ?? "";
  $("panel-hint").textContent = joined ? "" : state === "joining" ? "Joining…" : decision.text;
  if (panel.tab) showBadge(panel.tab.id, joined ? badgeText(count) : "");
}

// --- the toolbar badge, through the service worker ---

function post(message) {
  if (!panel.port) {
    panel.port = chrome.runtime.connect({ name: "panel" });
    panel.port.onDisconnect.addListener(() => {
      // The worker was stopped (it is, after a quiet half minute): a new one gets the count again.
      panel.port = null;
      clearTimeout(panel.reconnect);
      panel.reconnect = setTimeout(() => {
        if (panel.badge.tabId !== null) post({ type: "badge", ...panel.badge });
      }, RECONNECT_MS);
    });
  }
  panel.port.postMessage(message);
}

function showBadge(tabId, text) {
  if (panel.badge.tabId === tabId && panel.badge.text === text) return;
  panel.badge = { tabId, text };
  post({ type: "badge", tabId, text });
}

// --- the panel's own controls ---

const host = {
  // What the chat asks of the page holding it: the room shows in the panel's header.
  showRoom() {
    render();
  },
  inviteLink(fields) {
    // A chosen node's page (the person's, not one learned from the mesh: its page
    // would read the room's address in the fragment), with the room and the friend in
    // the fragment (address.js); the current node only when none was chosen.
    const node = panel.settings.nodes[0] ?? ui.peer?.node?.nodeUrl;
    return node ? `${node.replace(/^ws/, "http")}/${fragmentFor(fields)}` : fields.room;
  },
  left() {},
};

async function rememberNodes() {
  // Nodes heard of from the mesh are tried after the chosen ones next time.
  const learned = ui.peer.nodes.filter((url) => !panel.settings.nodes.includes(url)).slice(0, MAX_LEARNED);
  if (JSON.stringify(learned) === JSON.stringify(panel.settings.learned)) return;
  panel.settings.learned = learned;
  await saveSettings({ learned });
}

function wirePanel() {
  $("site-switch").addEventListener("change", async () => {
    const site = panel.decision?.site;
    if (!site) return;
    await saveSettings({ sites: switchSite(panel.settings.sites, site, $("site-switch").checked) });
  });
  $("open-options").addEventListener("click", () => chrome.runtime.openOptionsPage());
  chrome.storage.onChanged.addListener(async (changes, area) => {
    if (area !== "local") return;
    if ("nodes" in changes) location.reload(); // another list of nodes: start again with it
    else if ("allowLocal" in changes || "sites" in changes) {
      panel.settings = await loadSettings();
      reconsider();
    }
  });
  chrome.tabs.onActivated.addListener(({ windowId }) => {
    if (windowId === panel.windowId) followActive();
  });
  chrome.tabs.onUpdated.addListener((_id, change, tab) => {
    if (tab.windowId === panel.windowId && "url" in change) followActive();
  });
  chrome.tabs.onRemoved.addListener((_id, { windowId }) => {
    if (windowId === panel.windowId) followActive();
  });
  chrome.tabs.onAttached.addListener(() => followActive());
  chrome.tabs.onDetached.addListener(() => followActive());
  ui.peer?.on((event) => {
    // a node's directory comes with `welcome`, members' home nodes with each join
    if ((event.type === "status" && event.state === "connected") || event.type === "seated") rememberNodes();
    if (["member-joined", "member-left", "seated"].includes(event.type)) render();
  });
}

function holdLock() {
  // Resolves once this panel holds the identity: at once, or when the panel that
  // holds it closes. Held for as long as this page lives.
  return new Promise((resolve) => {
    navigator.locks.request(LOCK, { ifAvailable: true }, (lock) => {
      if (lock === null) {
        $("panel-hint").textContent = "pagemesh is open in another window; it comes here once that one closes.";
        navigator.locks.request(LOCK, () => {
          resolve();
          return new Promise(() => {});
        });
        return undefined;
      }
      resolve();
      return new Promise(() => {});
    });
  });
}

async function main() {
  // The transcript's empty state says why the panel is where it is (index.html's invites to paste a URL).
  const hint = document.createElement("p");
  hint.id = "panel-hint";
  $("empty-hint").replaceChildren(hint);
  $("you").append($("identity")); // name, key, notifications, export and import: folded away
  startEarly(null); // the identity's database opens while the panel asks the browser where it is
  await holdLock();
  // asked together: each is a round trip to the browser
  const [settings, window_, self] = await Promise.all([loadSettings(), chrome.windows.getCurrent(), chrome.tabs.getCurrent()]);
  panel.settings = settings;
  panel.windowId = window_.id;
  panel.selfTabId = self?.id ?? null;
  document.body.dataset.mode = panel.selfTabId === null ? "side-panel" : "tab";
  // The chosen nodes are the person's (the ones to go back to, docs/protocol.md 3.1);
  // those learned before are only where to fail over to.
  const { nodes: chosen, learned } = panel.settings;
  if (chosen.length || learned.length) {
    try {
      const peer = await Peer.open(chosen.length ? chosen : learned);
      peer.learnNodes(learned);
      startChat(peer, host);
    } catch (error) {
      banner(error.message);
    }
  } else {
    banner("No signaling node to use: add one in the options.");
  }
  wirePanel();
  await followActive();
  document.body.dataset.ready = "true";
}

ui.ready = main();
