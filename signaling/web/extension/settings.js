// What the extension keeps in chrome.storage.local (docs/extension.md), read and
// checked in one place for the panel and the options page:
//
//   nodes       the signaling nodes the person chose (ws:// or wss://), in order;
//               absent: the nodes the extension was built with (defaults.json)
//   allowLocal  join pages on local and private addresses too (false)
//   sites       {host: false} for each site switched off (sitepolicy.js)
//   learned     nodes heard of from the mesh, tried after the chosen ones (at most 32)
//
// Nothing here holds a page's address: only hosts that were switched off.

export const NODE_URL = /^wss?:\/\/[^/\s]{1,250}$/; // as peer.js takes a node's URL
export const MAX_NODES = 16;
export const MAX_LEARNED = 32;

let built = null;

export async function builtDefaults() {
  // What `pagemesh extension build` wrote: {nodes: [...], version}.
  if (built === null) {
    try {
      built = await (await fetch(chrome.runtime.getURL("extension/defaults.json"))).json();
    } catch {
      built = { nodes: [], version: "?" };
    }
  }
  return built;
}

export function nodeList(values, limit = MAX_NODES) {
  // Valid node URLs from `values` (strings), without repeats, at most `limit`.
  const kept = [];
  for (const value of Array.isArray(values) ? values : []) {
    const url = typeof value === "string" ? value.trim().replace(/\/+$/, "") : "";
    if (NODE_URL.test(url) && !kept.includes(url)) kept.push(url);
  }
  return kept.slice(0, limit);
}

export function parseNodes(text) {
  // The options page's box: one node per line. {nodes, refused}: the lines that are
  // no ws:// or wss:// address are refused, not dropped silently.
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  const refused = lines.filter((line) => !NODE_URL.test(line.replace(/\/+$/, "")));
  return { nodes: nodeList(lines), refused };
}

export async function loadSettings() {
  const stored = await chrome.storage.local.get(["nodes", "allowLocal", "sites", "learned"]);
  const defaults = await builtDefaults();
  const sites = {};
  if (stored.sites && typeof stored.sites === "object") {
    for (const [site, on] of Object.entries(stored.sites)) if (on === false) sites[site] = false;
  }
  return {
    nodes: nodeList(Array.isArray(stored.nodes) ? stored.nodes : defaults.nodes),
    chosen: Array.isArray(stored.nodes),
    allowLocal: stored.allowLocal === true,
    sites,
    learned: nodeList(stored.learned, MAX_LEARNED),
  };
}

export function saveSettings(changes) {
  return chrome.storage.local.set(changes);
}
