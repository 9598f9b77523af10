// A small, safe Markdown renderer for model replies.
//
// Model output is untrusted. This module only ever builds DOM nodes with createElement and
// textContent / createTextNode; it never assigns innerHTML, so "<script>" or an <img onerror>
// in a reply is shown as the literal text it is. Links are made only for http(s) URLs, and
// open in a new tab with rel="noopener noreferrer"; anything else stays plain text.
//
// Supported: paragraphs (single newlines kept as line breaks), headings, bold, italic,
// strikethrough, inline code, fenced code blocks (with a Copy button), bullet and numbered
// lists (nested), block quotes, horizontal rules and simple pipe tables. An unclosed fence
// (a reply still streaming) renders as a code block so far.

import { renderInline } from "./inline.js";

const MAX_DEPTH = 8;

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$/;
const HEADING_RE = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const HR_RE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE_RE = /^ {0,3}>\s?(.*)$/;
const LIST_RE = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const TABLE_SEP_RE = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

const isBlank = (line) => line.trim() === "";
const indentOf = (line) => line.length - line.trimStart().length;

function startsBlock(line) {
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) || QUOTE_RE.test(line) || LIST_RE.test(line);
}

/** Render Markdown text to a DocumentFragment of safe DOM nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  renderBlocks(lines, fragment, 0);
  return fragment;
}

function renderBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
    } else if (depth >= MAX_DEPTH) {
      i = renderParagraph(lines, i, parent, () => false);
    } else if (FENCE_RE.test(line)) {
      i = renderFence(lines, i, parent);
    } else if (HR_RE.test(line)) {
      parent.append(el("hr"));
      i += 1;
    } else if (HEADING_RE.test(line)) {
      const [, hashes, content] = HEADING_RE.exec(line);
      const heading = el(`h${hashes.length}`);
      renderInline(content ?? "", heading, false);
      parent.append(heading);
      i += 1;
    } else if (QUOTE_RE.test(line)) {
      i = renderQuote(lines, i, parent, depth);
    } else if (LIST_RE.test(line) && LIST_RE.exec(line)[3] !== undefined) {
      i = renderList(lines, i, parent, depth);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP_RE.test(lines[i + 1])) {
      i = renderTable(lines, i, parent);
    } else {
      i = renderParagraph(lines, i, parent, startsBlock);
    }
  }
}

function renderParagraph(lines, i, parent, stops) {
  const p = el("p");
  let first = true;
  while (i < lines.length && !isBlank(lines[i]) && (first || !stops(lines[i]))) {
    if (!first) p.append(el("br"));
    renderInline(lines[i].trim(), p, false);
    first = false;
    i += 1;
  }
  parent.append(p);
  return i;
}

function renderFence(lines, i, parent) {
  const [, fence, lang] = FENCE_RE.exec(lines[i]);
  const indent = indentOf(lines[i]);
  const closing = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
  const body = [];
  i += 1;
  while (i < lines.length && !closing.test(lines[i])) {
    body.push(lines[i].slice(Math.min(indent, indentOf(lines[i]))));
    i += 1;
  }
  parent.append(codeBlock(body.join("\n"), lang));
  return i + 1; // skip the closing fence (or step past the end)
}

/** A fenced code block: a header with the language and a Copy button, then the code. */
export function codeBlock(code, lang) {
  const wrap = el("div", "code-block");
  const head = el("div", "code-head");
  const label = el("span", "code-lang");
  label.textContent = lang || "code";
  const copy = el("button", "copy-btn");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${lang || "code"} to the clipboard`);
  head.append(label, copy);
  const pre = el("pre");
  const codeEl = el("code");
  codeEl.textContent = code;
  pre.append(codeEl);
  wrap.append(head, pre);
  return wrap;
}

function renderQuote(lines, i, parent, depth) {
  const inner = [];
  while (i < lines.length && !isBlank(lines[i])) {
    const m = QUOTE_RE.exec(lines[i]);
    if (!m && startsBlock(lines[i])) break;
    inner.push(m ? m[1] : lines[i]);
    i += 1;
  }
  const quote = el("blockquote");
  renderBlocks(inner, quote, depth + 1);
  parent.append(quote);
  return i;
}

function renderList(lines, i, parent, depth) {
  const first = LIST_RE.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
  const baseIndent = first[1].length;
  while (i < lines.length) {
    const m = LIST_RE.exec(lines[i]);
    if (!m || m[3] === undefined || /\d/.test(m[2]) !== ordered || m[1].length > baseIndent + 1) break;
    const item = el("li");
    const [body, next] = collectItem(lines, i, m);
    renderBlocks(body, item, depth + 1);
    unwrapTightParagraph(item);
    list.append(item);
    i = next;
    // A blank line between items keeps the list going only if another item follows.
    let j = i;
    while (j < lines.length && isBlank(lines[j])) j += 1;
    const after = j < lines.length ? LIST_RE.exec(lines[j]) : null;
    if (j > i && !(after && after[1].length <= baseIndent + 1 && /\d/.test(after[2]) === ordered)) break;
    i = j;
  }
  parent.append(list);
  return i;
}

/** The lines of one list item (marker removed, continuation lines dedented) and the next index. */
function collectItem(lines, i, m) {
  const markerIndent = m[1].length;
  const contentIndent = markerIndent + m[2].length + 1;
  const body = [m[3]];
  i += 1;
  while (i < lines.length) {
    const line = lines[i];
    const indent = indentOf(line);
    if (isBlank(line)) {
      let j = i;
      while (j < lines.length && isBlank(lines[j])) j += 1;
      if (j >= lines.length || indentOf(lines[j]) < contentIndent) break;
      body.push("");
      i += 1;
    } else if (indent > markerIndent) {
      body.push(line.slice(Math.min(indent, contentIndent)));
      i += 1;
    } else if (startsBlock(line)) {
      break;
    } else {
      body.push(line.trim()); // a lazy continuation line
      i += 1;
    }
  }
  return [body, i];
}

function unwrapTightParagraph(item) {
  const first = item.firstChild;
  if (first && first.nodeName === "P") {
    while (first.firstChild) item.insertBefore(first.firstChild, first);
    first.remove();
  }
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function renderTable(lines, i, parent) {
  const head = splitRow(lines[i]);
  const aligns = splitRow(lines[i + 1]).map((cell) =>
    cell.endsWith(":") ? (cell.startsWith(":") ? "center" : "right") : "",
  );
  const table = el("table");
  const thead = el("thead");
  const tbody = el("tbody");
  const addRow = (cells, section, tag) => {
    const tr = el("tr");
    head.forEach((_, col) => {
      const cell = el(tag);
      if (aligns[col]) cell.style.textAlign = aligns[col];
      renderInline(cells[col] ?? "", cell, false);
      tr.append(cell);
    });
    section.append(tr);
  };
  addRow(head, thead, "th");
  i += 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    addRow(splitRow(lines[i]), tbody, "td");
    i += 1;
  }
  table.append(thead, tbody);
  const wrap = el("div", "table-wrap");
  wrap.append(table);
  parent.append(wrap);
  return i;
}
