// The node's page and widget load this first (`async`, before app.js or widget.js and
// their modules): the identity's IndexedDB and the WebSocket to this node start while
// the rest of the page is still on its way (early.js). A page told to try other nodes
// first (`?node=`) opens no socket here: the first one it tries is another.

import { start } from "./early.js";

const home = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
start(new URLSearchParams(location.search).has("node") ? null : home);
