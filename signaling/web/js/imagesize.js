// The pixel size an image says it has, from its first bytes, before a browser decodes
// it: a member's 250 KB PNG can say 16000 x 16000, a gigabyte once decoded and seconds
// of a frozen page, and a page shows small images unasked (docs/protocol.md 5.2). Each
// format's header as its specification writes it (PNG IHDR, GIF logical screen, WebP
// VP8/VP8L/VP8X, JPEG SOFn, AVIF/HEIF `ispe`); anything else, or a header cut short,
// is null: not an image the page shows inline.

export const MAX_INLINE_PIXELS = 24_000_000; // a 6000 x 4000 photo; 96 MB decoded

const u16be = (b, i) => (b[i] << 8) | b[i + 1];
const u16le = (b, i) => b[i] | (b[i + 1] << 8);
const u24le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32be = (b, i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
const ascii = (b, i, n) => String.fromCharCode(...b.subarray(i, i + n));
const sized = (width, height) => (width > 0 && height > 0 ? { width, height } : null);

function png(b) {
  // signature, then the IHDR chunk first: length 13, "IHDR", width, height (big-endian)
  if (b.length < 24 || ascii(b, 12, 4) !== "IHDR") return null;
  return sized(u32be(b, 16), u32be(b, 20));
}

function gif(b) {
  return b.length < 10 ? null : sized(u16le(b, 6), u16le(b, 8));
}

function webp(b) {
  // RIFF....WEBP, then the first chunk
  if (b.length < 30) return null;
  const chunk = ascii(b, 12, 4);
  if (chunk === "VP8 ") {
    // a key frame: 3 bytes of frame tag, start code 9d 01 2a, then 14-bit sizes
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return null;
    return sized(u16le(b, 26) & 0x3fff, u16le(b, 28) & 0x3fff);
  }
  if (chunk === "VP8L") {
    if (b[20] !== 0x2f) return null;
    const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
    return sized((bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
  }
  if (chunk === "VP8X") return sized(u24le(b, 24) + 1, u24le(b, 27) + 1);
  return null;
}

function jpeg(b) {
  // markers from SOI on: each segment's length follows it, up to a start of frame
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i += 1; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2; // no length
      continue;
    }
    const frame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (frame) return sized(u16be(b, i + 7), u16be(b, i + 5));
    if (marker === 0xd9 || marker === 0xda) return null; // end, or data before any frame
    i += 2 + u16be(b, i + 2);
  }
  return null;
}

function heif(b) {
  // ISO BMFF (AVIF): the image's `ispe` property, version/flags then width and height;
  // the largest one named, as an image may carry a thumbnail beside it
  let best = null;
  const end = Math.min(b.length, 65536) - 16;
  for (let i = 4; i < end; i++) {
    if (b[i] !== 0x69 || ascii(b, i, 4) !== "ispe") continue;
    const found = sized(u32be(b, i + 8), u32be(b, i + 12));
    if (found && (!best || found.width * found.height > best.width * best.height)) best = found;
  }
  return best;
}

export function imageSize(bytes) {
  // {width, height} of a PNG, GIF, WebP, JPEG or AVIF from its bytes (Uint8Array), else null.
  const b = bytes;
  if (b.length >= 8 && b[0] === 0x89 && ascii(b, 1, 3) === "PNG") return png(b);
  if (b.length >= 6 && (ascii(b, 0, 6) === "GIF87a" || ascii(b, 0, 6) === "GIF89a")) return gif(b);
  if (b.length >= 12 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP") return webp(b);
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return jpeg(b);
  if (b.length >= 12 && ascii(b, 4, 4) === "ftyp" && /^(avif|avis|heic|heix|mif1)$/.test(ascii(b, 8, 4))) return heif(b);
  return null;
}

export function showsInline(bytes, maxPixels = MAX_INLINE_PIXELS) {
  // Whether an image's bytes say a size the page may decode unasked.
  const size = imageSize(bytes);
  return size !== null && size.width * size.height <= maxPixels;
}
