// Sending and streaming: a new message, regenerate, edit-and-resend, Stop, and what a
// failure leaves behind. A reply belongs to the conversation it was asked in, even if the
// reader opens another one meanwhile (opening another one stops it).

import { ApiError, getJson, mergeToolCalls, streamChat } from "./api.js";
import { requestBody, titleFrom } from "./conversations.js";
import { errorText, replyFigures } from "./format.js";
import { AssistantMessage, addUserMessage, renderConversation } from "./messages.js";
import { needsLoading } from "./models.js";
import { currentModel, newChat, save, state } from "./session.js";
import { askForApiKey } from "./settings.js";
import { addErrorMessage } from "./ui.js";

/** Set by the controller: called with true when a reply starts streaming, false after. */
export const hooks = { busy: () => {}, apiKey: () => {} };

export async function sendMessage(text) {
  const conversation = state.current;
  if (!conversation || state.active || !text.trim()) return;
  if (!conversation.messages.length) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  addUserMessage(conversation.messages.at(-1), conversation.messages.length - 1);
  save(conversation);
  await reply(conversation);
}

/** Drop the last answer (if any) and ask again for the last user message. */
export async function regenerate() {
  const conversation = state.current;
  if (state.active) return;
  if (conversation.messages.at(-1)?.role === "assistant") conversation.messages.pop();
  const last = conversation.messages.at(-1);
  if (!last || last.role !== "user") return;
  delete last.failed;
  renderConversation(conversation);
  await reply(conversation);
}

/** Replace user message `index` with `text`, drop every later turn, and ask again. */
export async function editAndResend(index, text) {
  const conversation = state.current;
  if (state.active || conversation.messages[index]?.role !== "user") return;
  conversation.messages = conversation.messages.slice(0, index);
  conversation.messages.push({ role: "user", content: text });
  if (index === 0) conversation.title = titleFrom(text);
  renderConversation(conversation);
  save(conversation);
  await reply(conversation);
}

export function stop() {
  if (state.active) state.active.controller.abort();
}

async function reply(conversation) {
  const controller = new AbortController();
  state.active = { controller, conversation };
  hooks.busy(true);
  try {
    for (;;) {
      const outcome = await streamOnce(conversation, controller.signal);
      if (outcome !== "retry") break;
    }
  } finally {
    state.active = null;
    hooks.busy(false);
  }
}

/** A reply as it streams: answer, reasoning and tool calls, and when each piece came. */
class Reply {
  constructor(model) {
    this.message = { role: "assistant", content: "", model };
    this.raw = "";
    this.reasoning = "";
    this.reasoningPieces = 0;
    this.toolCalls = [];
    this.timing = { start: performance.now(), first: null, last: null, pieces: 0 };
    this.thinking = { start: null, end: null };
  }

  add({ content, reasoning, toolCalls }) {
    const now = performance.now();
    this.timing.pieces += 1;
    this.timing.last = now;
    this.timing.first ??= now;
    if (reasoning) {
      this.reasoning += reasoning;
      this.reasoningPieces += 1;
      this.thinking.start ??= now;
      this.thinking.end = now;
    }
    if (content) this.raw += content;
    if (toolCalls.length) mergeToolCalls(this.toolCalls, toolCalls);
  }

  /** The message so far. A reply that opens with <think> (reasoning the server did not
   * split off) is shown the same way as reasoning_content. */
  current() {
    const m = this.message;
    m.content = this.raw;
    const think = !this.reasoning && /^\s*<think>/.exec(this.raw);
    if (think) {
      const close = this.raw.indexOf("</think>");
      m.reasoning = this.raw.slice(think[0].length, close < 0 ? undefined : close).trim();
      m.content = close < 0 ? "" : this.raw.slice(close + "</think>".length).trimStart();
    } else if (this.reasoning) {
      m.reasoning = this.reasoning;
      m.reasoningTokens = this.reasoningPieces;
    }
    if (this.toolCalls.length) m.toolCalls = this.toolCalls.map(({ id, name, arguments: args }) => ({ id, name, arguments: args }));
    return m;
  }

  seconds() {
    const { start, end } = this.thinking;
    return start === null ? null : (end - start) / 1000;
  }

  hasAnything() {
    return Boolean(this.raw || this.reasoning || this.toolCalls.length);
  }

  done(result) {
    const m = this.current();
    const counted = result.usage?.completion_tokens_details?.reasoning_tokens;
    if (Number.isInteger(counted) && m.reasoning) m.reasoningTokens = counted;
    m.state = "done";
    m.meta = replyFigures(result, this.timing);
    return m;
  }
}

/** Words under the typing dots until the first token: queued, loading the model... */
function watchWaiting(view, model) {
  const entry = state.models.find((m) => m.id === model);
  const loading = entry && needsLoading(entry.state);
  if (loading) view.waiting(`Loading ${model}…`);
  let timer = null;
  let stopped = false;
  const poll = async () => {
    try {
      const health = await getJson("/health");
      const queued = Number(health?.queue_length) || 0;
      if (stopped) return;
      if (health?.status && health.status !== "ok") view.waiting(health.status === "loading" ? "Loading the model…" : `Server: ${health.status}…`);
      else if (queued > 0) view.waiting(`In the queue · ${queued} waiting`);
      else if (!loading) view.waiting("Waiting for the first token…");
    } catch (err) {
      if (!stopped && err instanceof ApiError && err.kind === "loading") view.waiting("Loading the model…");
    }
    if (!stopped) timer = setTimeout(poll, 1000);
  };
  timer = setTimeout(poll, 300);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

async function streamOnce(conversation, signal) {
  for (const button of document.querySelectorAll("#messages [data-action=regenerate]")) button.remove();
  const model = currentModel();
  const view = new AssistantMessage(conversation.messages.length);
  const reply = new Reply(model);
  const stopWaiting = watchWaiting(view, model);
  try {
    const result = await streamChat(requestBody(conversation, model), {
      apiKey: state.apiKey,
      signal,
      onDelta: (delta) => {
        stopWaiting();
        reply.add(delta);
      },
      onChunk: () => view.show(reply.current(), { streaming: true, seconds: reply.seconds() }),
    });
    const message = reply.done(result);
    view.show(message, { seconds: reply.seconds() });
    view.finish("done", message.meta, { last: true });
    conversation.messages.push(message);
    save(conversation);
    return "done";
  } catch (err) {
    const error = err instanceof ApiError ? err : new ApiError("network", String(err));
    return handleFailure(error, { conversation, view, reply });
  } finally {
    stopWaiting();
  }
}

function keepPartial(conversation, view, reply, stateName, meta) {
  const message = reply.current();
  message.state = stateName;
  message.meta = meta;
  view.show(message, { seconds: reply.seconds() });
  view.finish(stateName, meta, { last: true });
  conversation.messages.push(message);
}

function markUnanswered(conversation) {
  const last = conversation.messages.at(-1);
  if (!last || last.role !== "user") return;
  last.failed = true;
  const item = document.querySelector(`#messages li[data-index="${conversation.messages.length - 1}"]`);
  if (item && conversation === state.current) item.classList.add("msg-failed");
}

async function handleFailure(error, { conversation, view, reply }) {
  if (error.kind === "aborted") {
    if (reply.hasAnything()) {
      keepPartial(conversation, view, reply, "stopped", `Stopped · ${replyFigures({}, reply.timing)}`);
    } else {
      view.finish("stopped", "Stopped before the reply began.");
      markUnanswered(conversation);
    }
    save(conversation);
    return "stopped";
  }
  if (error.kind === "auth") {
    view.remove();
    const key = await askForApiKey(error.message, Boolean(state.apiKey));
    if (key) {
      hooks.apiKey(key);
      return "retry";
    }
  }
  if (reply.hasAnything()) keepPartial(conversation, view, reply, "error", "The reply was cut short.");
  else {
    view.remove();
    markUnanswered(conversation);
  }
  save(conversation);
  if (conversation === state.current) showError(error, () => conversation === state.current && regenerate());
  return "error";
}

function showError(error, retry) {
  const [title, detail] = errorText(error);
  const actions = [{ label: "Try again", onClick: retry }];
  if (error.kind === "auth") actions.unshift({ label: "Enter API key", onClick: () => promptForKey(retry) });
  if (error.kind === "too_long") actions.unshift({ label: "New chat", onClick: newChat });
  const card = addErrorMessage(title, detail, actions);
  card.dataset.kind = error.kind;
  if (error.status) card.dataset.status = String(error.status);
}

async function promptForKey(then) {
  const key = await askForApiKey("", Boolean(state.apiKey));
  if (key) {
    hooks.apiKey(key);
    then();
  }
}
