// The options page: the nodes to use, whether local addresses have rooms, and the
// sites switched off (each can be switched on again here). Saved in
// chrome.storage.local (settings.js); an open panel follows at once.

import { builtDefaults, loadSettings, parseNodes, saveSettings } from "./settings.js";
import { switchSite } from "./sitepolicy.js";

const $ = (id) => document.getElementById(id);

function renderSites(sites) {
  const rows = Object.keys(sites).map((site) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = site;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.textContent = "Switch on";
    button.setAttribute("aria-label", `Switch pagemesh on for ${site}`);
    button.addEventListener("click", async () => {
      const now = (await loadSettings()).sites;
      await saveSettings({ sites: switchSite(now, site, true) });
      renderSites(switchSite(now, site, true));
    });
    li.append(name, " ", button);
    return li;
  });
  $("sites-off").replaceChildren(...rows);
  if (!rows.length) $("sites-off").append(Object.assign(document.createElement("li"), { textContent: "none" }));
}

async function main() {
  const settings = await loadSettings();
  $("version").textContent = (await builtDefaults()).version;
  $("nodes").value = settings.nodes.join("\n");
  $("learned").textContent = settings.learned.length ? settings.learned.join(", ") : "none yet";
  $("allow-local").checked = settings.allowLocal;
  renderSites(settings.sites);
  $("options-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const { nodes, refused } = parseNodes($("nodes").value);
    if (refused.length) {
      $("saved").textContent = `Not a ws:// or wss:// address: ${refused.join(", ")}`;
      $("saved").dataset.kind = "problem";
      return;
    }
    // Only what changed: a new node list restarts an open panel.
    const now = await loadSettings();
    const changes = {};
    if (JSON.stringify(nodes) !== JSON.stringify(now.nodes)) changes.nodes = nodes;
    if ($("allow-local").checked !== now.allowLocal) changes.allowLocal = $("allow-local").checked;
    await saveSettings(changes);
    $("saved").textContent = "Saved.";
    $("saved").dataset.kind = "ok";
  });
  document.body.dataset.ready = "true";
}

main();
