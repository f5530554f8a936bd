// The extension's service worker. It holds nothing: a service worker has no
// RTCPeerConnection and Chrome stops it after half a minute of quiet, so the peer,
// its node connection and its links live in the panel page (docs/extension.md).
// What is left for it:
//   - the toolbar button opens the side panel;
//   - a panel reports the number of people on the page it follows ("badge"
//     messages on its port), shown on that tab's toolbar button;
//   - once the panel is gone (its port disconnects), no tab keeps a count.

const MAX_BADGE = 4; // characters the toolbar button shows

chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch((error) => console.warn("pagemesh:", error.message));

function isBadge(message) {
  return (
    message !== null &&
    typeof message === "object" &&
    message.type === "badge" &&
    Number.isSafeInteger(message.tabId) &&
    message.tabId >= 0 &&
    typeof message.text === "string" &&
    message.text.length <= MAX_BADGE
  );
}

async function clearAll() {
  // Every tab's count goes; this worker keeps no list of where it set one.
  for (const tab of await chrome.tabs.query({})) {
    chrome.action.setBadgeText({ tabId: tab.id, text: "" }).catch(() => {}); // closed meanwhile
  }
}

chrome.runtime.onConnect.addListener((port) => {
  // Only this extension's own pages connect (no externally_connectable, no content scripts).
  if (port.name !== "panel" || port.sender?.id !== chrome.runtime.id) {
    port.disconnect();
    return;
  }
  port.onMessage.addListener((message) => {
    if (!isBadge(message)) return;
    chrome.action.setBadgeBackgroundColor({ tabId: message.tabId, color: "#2459c4" }).catch(() => {});
    chrome.action.setBadgeText({ tabId: message.tabId, text: message.text }).catch(() => {}); // the tab may be gone
  });
  port.onDisconnect.addListener(() => {
    clearAll();
  });
});
