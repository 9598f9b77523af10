// Inline Markdown: code spans first (their content is literal), then links, emphasis and
// bare URLs. Like the block renderer, it only creates elements and text nodes: never HTML.
// Links are made only for http(s) URLs (new tab, rel="noopener noreferrer"); any other
// scheme (javascript:, data:, relative) stays the literal text it was.

const URL_RE = /^https?:\/\/[^\s<>"'`]+/i;
const SAFE_URL_RE = /^https?:\/\/[^\s<>"'`]+$/i;
const PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

function el(tag) {
  return document.createElement(tag);
}

const isWordChar = (ch) => ch !== undefined && /[\p{L}\p{N}]/u.test(ch);
const isSpace = (ch) => ch === undefined || /\s/.test(ch);

/** Append the inline Markdown of ``text`` to ``parent`` as text nodes and safe elements. */
export function renderInline(text, parent, insideLink) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const handled =
      (ch === "\\" && escape(text, i)) ||
      (ch === "`" && codeSpan(text, i)) ||
      (ch === "[" && !insideLink && link(text, i)) ||
      ((ch === "*" || ch === "_" || ch === "~") && emphasis(text, i, insideLink)) ||
      ((ch === "h" || ch === "H") && !insideLink && !isWordChar(text[i - 1]) && bareUrl(text, i));
    if (handled) {
      if (handled.text !== undefined) {
        buffer += handled.text;
      } else {
        flush();
        parent.append(handled.node);
      }
      i = handled.end;
    } else {
      buffer += ch;
      i += 1;
    }
  }
  flush();
}

function escape(text, i) {
  const next = text[i + 1];
  return next !== undefined && PUNCT.includes(next) ? { text: next, end: i + 2 } : null;
}

function codeSpan(text, i) {
  let run = 1;
  while (text[i + run] === "`") run += 1;
  const fence = "`".repeat(run);
  let j = text.indexOf(fence, i + run);
  while (j >= 0 && text[j + run] === "`") j = text.indexOf(fence, j + run + 1);
  if (j < 0) return { text: fence, end: i + run };
  let inner = text.slice(i + run, j);
  if (inner.length > 2 && inner.startsWith(" ") && inner.endsWith(" ")) inner = inner.slice(1, -1);
  const code = el("code");
  code.textContent = inner;
  return { node: code, end: j + run };
}

function link(text, i) {
  const close = text.indexOf("](", i + 1);
  if (close < 0 || text.slice(i + 1, close).includes("[")) return null;
  const end = text.indexOf(")", close + 2);
  if (end < 0) return null;
  const url = text.slice(close + 2, end).trim();
  if (!SAFE_URL_RE.test(url)) return null; // javascript:, data:, relative: left as text
  return { node: anchor(url, text.slice(i + 1, close)), end: end + 1 };
}

function bareUrl(text, i) {
  const m = URL_RE.exec(text.slice(i));
  if (!m) return null;
  const url = m[0].replace(/[.,;:!?)\]]+$/, "");
  return { node: anchor(url, null), end: i + url.length };
}

function anchor(url, label) {
  const a = el("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  if (label === null) a.textContent = url;
  else renderInline(label, a, true);
  return a;
}

function emphasis(text, i, insideLink) {
  const ch = text[i];
  let run = 1;
  while (text[i + run] === ch) run += 1;
  if (ch === "~" && run !== 2) return null;
  const size = ch === "~" ? 2 : Math.min(run, 2);
  const delim = ch.repeat(size);
  const open = i + size;
  if (isSpace(text[open])) return null;
  if (ch === "_" && isWordChar(text[i - 1])) return null; // snake_case stays as written
  const close = findCloser(text, open, delim);
  if (close < 0) return null;
  const node = el(ch === "~" ? "del" : size === 2 ? "strong" : "em");
  renderInline(text.slice(open, close), node, insideLink);
  return { node, end: close + size };
}

function findCloser(text, from, delim) {
  const ch = delim[0];
  let j = from;
  while (j < text.length) {
    if (text[j] === "`") {
      const end = text.indexOf("`", j + 1);
      j = end < 0 ? j + 1 : end + 1;
      continue;
    }
    if (text.startsWith(delim, j) && j > from && !isSpace(text[j - 1])) {
      const runEnd = j + delim.length;
      const wordAfter = ch === "_" && isWordChar(text[runEnd]);
      // A single "*" closer must not be half of a "**" pair (that is nested strong text).
      const half = delim.length === 1 && (text[runEnd] === ch || text[j - 1] === ch);
      if (!wordAfter && !half) return j;
    }
    if (delim.length === 1 && text[j] === ch && text[j + 1] === ch) {
      j += 2;
      continue;
    }
    j += 1;
  }
  return -1;
}
