// Small DOM helpers the page's views share (chat, contacts, direct messages, blocking).
// Built with DOM calls only: text stays text, nothing is parsed as markup.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  // An element with `props` (a property when the element has one, else an attribute;
  // `dataset` merged) and `children` (null and undefined left out).
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function size(bytes) {
  // A byte count for people in SI units, as file managers show them (512 B, 1.5 kB,
  // 2.0 MB), to a tenth rounded half up in integers: the words pagemesh chat prints
  // (peer/chatscreen.py human_size). Exact below 900 TB (bytes * 10 under 2^53).
  if (bytes < 1000) return `${bytes} B`;
  let scale = 1;
  for (const unit of ["kB", "MB", "GB", "TB"]) {
    scale *= 1000;
    const tenths = Math.floor((bytes * 10 + scale / 2) / scale);
    if (tenths < 10_000 || unit === "TB") return `${Math.floor(tenths / 10)}.${tenths % 10} ${unit}`;
  }
}
