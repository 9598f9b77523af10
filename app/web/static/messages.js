// The message views: a user bubble (copy, edit) and an assistant reply (collapsed reasoning,
// tool-call blocks, the answer, its figures; copy, regenerate). Text from the model or the
// server only ever goes in through textContent or the safe Markdown renderer.
//
// Buttons carry data-action and the <li> data-index (the message's place in the
// conversation); the controller handles their clicks in one delegated listener.

import { codeBlock, renderMarkdown } from "./markdown.js";
import { el, scrollToEnd, nearBottom, setEmptyState } from "./dom.js";

const messages = () => document.getElementById("messages");

function actionButton(action, label, title) {
  const button = el("button", "msg-action", label);
  button.type = "button";
  button.dataset.action = action;
  button.title = title;
  return button;
}

/** The actions row under a message. */
function actions(role, { last }) {
  const row = el("div", "msg-actions");
  row.append(actionButton("copy", "Copy", "Copy this message"));
  if (role === "user") row.append(actionButton("edit", "Edit", "Edit and send again (later turns are replaced)"));
  if (role === "assistant" && last) row.append(actionButton("regenerate", "Regenerate", "Write this answer again"));
  return row;
}

export function addUserMessage(message, index) {
  const item = el("li", "msg msg-user");
  item.dataset.index = String(index);
  if (message.failed) item.classList.add("msg-failed");
  item.append(el("div", "bubble", message.content));
  if (message.failed) item.append(el("div", "msg-note", "Not answered"));
  item.append(actions("user", { last: false }));
  messages().append(item);
  setEmptyState(false);
  return item;
}

/** Swap a user bubble for an editor; resolves with the new text, or null if cancelled. */
export function editUserMessage(item, original) {
  return new Promise((resolve) => {
    const form = el("form", "edit-form");
    const area = el("textarea", "edit-input");
    area.value = original;
    area.rows = Math.min(10, Math.max(2, original.split("\n").length));
    area.setAttribute("aria-label", "Edit the message");
    const cancel = el("button", "btn btn-small btn-ghost", "Cancel");
    cancel.type = "button";
    const save = el("button", "btn btn-small btn-primary", "Send");
    save.type = "submit";
    const row = el("div", "edit-actions");
    row.append(cancel, save);
    form.append(area, row);
    item.classList.add("editing");
    item.append(form);
    area.focus();
    const done = (value) => {
      form.remove();
      item.classList.remove("editing");
      resolve(value);
    };
    cancel.addEventListener("click", () => done(null));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (area.value.trim()) done(area.value);
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        done(null);
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  });
}

function typingDots() {
  const wrap = el("div", "waiting");
  const dots = el("span", "typing");
  dots.setAttribute("aria-hidden", "true");
  for (let i = 0; i < 3; i += 1) dots.append(el("span"));
  wrap.append(dots, el("span", "wait-label", "Waiting for the server…"));
  return wrap;
}

function toolCallBlock(call) {
  let args = call.arguments;
  try {
    args = JSON.stringify(JSON.parse(call.arguments), null, 2);
  } catch {
    // Not (yet) whole JSON: show the text as it came.
  }
  const block = codeBlock(args, "json");
  block.classList.add("tool-call");
  const label = block.querySelector(".code-lang");
  label.textContent = `tool call · ${call.name || "unnamed"}`;
  return block;
}

/** One assistant reply. Built from a saved message, or empty and filled as it streams. */
export class AssistantMessage {
  constructor(index, message = null, { last = false } = {}) {
    this.item = el("li", "msg msg-assistant");
    this.item.dataset.index = String(index);
    this.reasoning = el("details", "reasoning");
    this.reasoning.hidden = true;
    this.reasoningLabel = el("summary", "reasoning-label");
    this.reasoningText = el("div", "reasoning-text");
    this.reasoning.append(this.reasoningLabel, this.reasoningText);
    this.tools = el("div", "tool-calls");
    this.content = el("div", "content markdown");
    this.meta = el("div", "meta");
    const body = el("div", "body");
    body.append(this.reasoning, this.tools, this.content, this.meta);
    this.item.append(avatar(), body);
    messages().append(this.item);
    setEmptyState(false);
    if (message) {
      this.show(message);
      this.finish(message.state || "done", message.meta || "", { last });
    } else {
      this.item.dataset.state = "waiting";
      this.content.append(typingDots());
      scrollToEnd(true);
    }
  }

  /** Words under the typing dots while no token has come: queued, loading the model... */
  waiting(label) {
    const node = this.content.querySelector(".wait-label");
    if (node) node.textContent = label;
  }

  /** Show a message's reasoning, tool calls and text so far. */
  show({ content, reasoning, reasoningTokens, toolCalls }, { streaming = false, seconds = null } = {}) {
    const follow = nearBottom();
    if (reasoning) {
      this.reasoning.hidden = false;
      this.reasoningText.textContent = reasoning;
      this.reasoningLabel.textContent = reasoningSummary(reasoningTokens, streaming && !content, seconds);
    }
    if (toolCalls && toolCalls.length) this.tools.replaceChildren(...toolCalls.map(toolCallBlock));
    if (content) this.content.replaceChildren(renderMarkdown(content));
    if (streaming && (content || reasoning || toolCalls?.length)) {
      this.item.dataset.state = "streaming";
      if (!content) this.content.replaceChildren();
    }
    if (follow) scrollToEnd(true);
  }

  finish(state, metaText, { last = false } = {}) {
    this.item.dataset.state = state;
    if (this.content.querySelector(".waiting")) this.content.replaceChildren();
    this.meta.textContent = metaText;
    if (!this.content.hasChildNodes() && this.reasoning.hidden && !this.tools.hasChildNodes()) {
      this.item.classList.add("msg-empty");
    }
    this.item.querySelector(".msg-actions")?.remove();
    this.item.querySelector(".body").append(actions("assistant", { last }));
    scrollToEnd();
  }

  remove() {
    this.item.remove();
  }
}

/** "Thinking… · 42 tokens" while it streams, "Thought for 42 tokens · 3.1 s" after. */
export function reasoningSummary(tokens, streaming, seconds) {
  const count = Number.isInteger(tokens) ? `${tokens} token${tokens === 1 ? "" : "s"}` : null;
  if (streaming) return count ? `Thinking… · ${count}` : "Thinking…";
  const parts = [count ? `Thought for ${count}` : "Reasoning"];
  if (Number.isFinite(seconds) && seconds > 0) parts.push(`${seconds.toFixed(1)} s`);
  return parts.join(" · ");
}

const AVATAR_SVG_PATH =
  "M12 3c-1.4 0-2.5 1.1-2.5 2.5V8H8a4 4 0 0 0-4 4v4a4 4 0 0 0 4 4h8a4 4 0 0 0 4-4v-4a4 4 0 0 0-4-4h-1.5V5.5C14.5 4.1 13.4 3 12 3Zm-3 10a1.25 1.25 0 1 1 0 2.5A1.25 1.25 0 0 1 9 13Zm6 0a1.25 1.25 0 1 1 0 2.5A1.25 1.25 0 0 1 15 13Z";

function avatar() {
  const box = el("div", "avatar");
  box.setAttribute("aria-hidden", "true");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", AVATAR_SVG_PATH);
  svg.append(path);
  box.append(svg);
  return box;
}

/** Draw a whole conversation (after switching to it, editing or regenerating). */
export function renderConversation(conversation) {
  messages().replaceChildren();
  const list = conversation.messages;
  const lastAssistant = list.length && list[list.length - 1].role === "assistant" ? list.length - 1 : -1;
  list.forEach((message, index) => {
    if (message.role === "user") addUserMessage(message, index);
    else new AssistantMessage(index, message, { last: index === lastAssistant });
  });
  setEmptyState(list.length === 0);
  scrollToEnd(true);
}
