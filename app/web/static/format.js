// Pure formatting for the chat: the figures under a reply and the words for each error.

/** "42 tokens · 95.3 tok/s", from the usage chunk and the time between first and last piece. */
export function replyFigures(result, timing, now = performance.now()) {
  const usage = result.usage && typeof result.usage === "object" ? result.usage : null;
  const counted = Number.isInteger(usage?.completion_tokens);
  const tokens = counted ? usage.completion_tokens : timing.pieces;
  const parts = [`${counted ? "" : "~"}${tokens} token${tokens === 1 ? "" : "s"}`];
  const span = timing.first !== null && timing.last > timing.first ? (timing.last - timing.first) / 1000 : 0;
  let rate = null;
  if (tokens > 1 && span > 0.05) rate = (tokens - 1) / span;
  else if (tokens > 0) rate = tokens / Math.max((now - timing.start) / 1000, 0.001);
  if (rate !== null) parts.push(`${rate.toFixed(1)} tok/s`);
  if (timing.first !== null) parts.push(`first token ${((timing.first - timing.start) / 1000).toFixed(2)} s`);
  if (result.finishReason === "length") parts.push("hit the max tokens limit");
  return parts.join(" · ");
}

/** " Try again in 5 s." from a Retry-After header, else the fallback. */
function retryIn(error, fallback) {
  if (error.retryAfter === null || error.retryAfter === undefined) return fallback ? ` ${fallback}` : "";
  const seconds = error.retryAfter;
  const wait = seconds >= 120 ? `${Math.round(seconds / 60)} min` : `${seconds} s`;
  return ` Try again in ${wait}.`;
}

const ERROR_TEXT = {
  busy: (e) => ["The server is busy", `Every slot is taken and the queue is full.${retryIn(e, "")}`],
  loading: (e) =>
    !e.code || e.code === "model_loading"
      ? ["The model is still loading", retryIn(e, "Try again in a few seconds.").trim()]
      : ["The model is not available", `${e.message}${retryIn(e, "")}`],
  too_long: (e) => ["The conversation is too long for the model's context", e.message],
  bad_request: (e) => ["The server refused the request", e.message],
  auth: () => ["An API key is needed", "This server requires an API key. Enter it to continue."],
  server: (e) => ["The server had a problem", e.message],
  stream: (e) => ["The reply stopped with an error", e.message],
  network: (e) => ["Can't reach the server", e.message],
};

/** A title and a sentence for an ApiError, in plain words. */
export function errorText(error) {
  return (ERROR_TEXT[error.kind] || ERROR_TEXT.server)(error);
}
