// Control-channel frames (docs/protocol.md 5.0), as parse_control_frame in
// peer/webrtc.py: a JSON object of at most MAX_CONTROL_FRAME characters and
// MAX_CONTROL_DEPTH levels of nesting, or a ProtocolError whose code names the
// defect (counted as `drop.control_<code>`). The depth is checked by a scan
// before JSON.parse ever sees the text.

import { ProtocolError, tooDeep } from "./bytes.js";

export const MAX_CONTROL_FRAME = 256 * 1024;
export const MAX_CONTROL_DEPTH = 16;


export function parseControlFrame(data) {
  if (typeof data !== "string") throw new ProtocolError("not_json", "control frame is not text");
  if (data.length > MAX_CONTROL_FRAME) throw new ProtocolError("too_large", "control frame too large");
  if (tooDeep(data, MAX_CONTROL_DEPTH)) throw new ProtocolError("too_deep", `control frame nested over ${MAX_CONTROL_DEPTH}`);
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    throw new ProtocolError("not_json", "control frame is not JSON");
  }
  if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
    throw new ProtocolError("not_object", "control frame is not a JSON object");
  }
  return frame;
}
