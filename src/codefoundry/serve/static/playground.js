// The codefoundry playground: plain JS, no build step, no third-party code (the CSP allows only this file).
// Streams from TGI's /generate_stream or the OpenAI routes with `stream: true`, on this server and,
// in compare mode, on a second server the user names.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = { self: "codefoundry.playground.apiKey", other: "codefoundry.playground.otherKey" };
const URL_STORE = "codefoundry.playground.otherUrl";

let modelInfo = null; // this server's /ui/model.json
let running = [];     // AbortControllers of the requests in flight

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

// ---- the two panes ----

function pane(which) {
  const p = which === "self" ? "" : "other-";
  return { root: $(which === "self" ? "pane-self" : "pane-other"), output: $(p + "output"),
           stats: $(p + "stats"), error: $(p + "error") };
}

function setState(view, state) {
  view.root.dataset.state = state;
  view.output.setAttribute("aria-busy", state === "running" ? "true" : "false");
}

function showError(view, message) {
  view.error.textContent = message;
  view.error.hidden = false;
  setState(view, "error");
}

function resetPane(view) {
  view.output.textContent = "";
  view.stats.textContent = "";
  view.error.textContent = "";
  view.error.hidden = true;
  setState(view, "running");
}

// Tokens, decode rate and time to first token, redrawn as tokens arrive.
class Meter {
  constructor(view) { this.view = view; this.start = performance.now(); this.first = null; this.last = null; this.tokens = 0; }
  add(n) {
    const now = performance.now();
    if (this.first === null) this.first = now;
    this.last = now;
    this.tokens += n;
    this.draw();
  }
  draw(finalTokens) {
    if (finalTokens !== undefined) this.tokens = finalTokens;
    const parts = [`${this.tokens} token${this.tokens === 1 ? "" : "s"}`];
    if (this.first !== null && this.last > this.first && this.tokens > 1) {
      parts.push(`${((this.tokens - 1) / ((this.last - this.first) / 1000)).toFixed(1)} tok/s`);
    }
    if (this.first !== null) parts.push(`first token ${Math.round(this.first - this.start)} ms`);
    this.view.stats.textContent = parts.join(" · ");
    this.view.stats.dataset.tokens = String(this.tokens);
  }
}

// ---- requests ----

function numberField(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function sampling() {
  const stop = $("stop").value.split("\n").filter((s) => s.length > 0);
  return { temperature: numberField("temperature") ?? 0, topP: numberField("top-p") ?? 1,
           topK: numberField("top-k") ?? 0, maxNewTokens: numberField("max-new-tokens") ?? 64,
           seed: numberField("seed"), stop };
}

function tgiBody(prompt, s) {
  const parameters = { max_new_tokens: s.maxNewTokens, details: false };
  if (s.temperature > 0) {  // 0 = greedy: no sampling parameter at all, so TGI does not sample
    parameters.do_sample = true;
    parameters.temperature = s.temperature;
    if (s.topP < 1) parameters.top_p = s.topP;
    if (s.topK > 0) parameters.top_k = s.topK;
  }
  if (s.seed !== null) parameters.seed = s.seed;
  if (s.stop.length) parameters.stop = s.stop;
  return { inputs: prompt, parameters };
}

function openaiBody(s, model) {
  const body = { max_tokens: s.maxNewTokens, temperature: s.temperature, stream: true,
                 stream_options: { include_usage: true } };
  if (s.topP < 1) body.top_p = s.topP;
  if (s.seed !== null) body.seed = s.seed;
  if (s.stop.length) body.stop = s.stop;
  if (model) body.model = model;
  return body;
}

function chatMessages() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const li of $("conversation").children) messages.push({ role: li.dataset.role, content: li.dataset.content });
  messages.push({ role: "user", content: $("user-message").value });
  return messages;
}

function fimPrompt(fim) {
  return fim.prefix + $("fim-prefix").value + fim.suffix + $("fim-suffix").value + fim.middle;
}

// {url, body, kind} for one endpoint: {base, key, api, model, fim}.
function buildRequest(endpoint) {
  const s = sampling();
  const m = mode();
  if (m === "chat") {
    return { url: endpoint.base + "/v1/chat/completions", kind: "chat",
             body: { ...openaiBody(s, endpoint.model), messages: chatMessages() } };
  }
  let prompt = $("prompt").value;
  if (m === "fim") {
    if (!endpoint.fim) throw new Error("this model has no fill-in-the-middle tokens");
    prompt = fimPrompt(endpoint.fim);
  }
  const around = m === "fim" ? { before: $("fim-prefix").value, after: $("fim-suffix").value } : null;
  if (endpoint.api === "openai") {
    return { url: endpoint.base + "/v1/completions", kind: "completion", around,
             body: { ...openaiBody(s, endpoint.model), prompt } };
  }
  return { url: endpoint.base + "/generate_stream", kind: "tgi", around, body: tgiBody(prompt, s) };
}

// The server's own words for a failed request: `{"error": "..."}` (TGI, ours), `{"error": {"message"}}` (OpenAI).
async function failureMessage(response) {
  const text = await response.text();
  if (response.status === 401) return "401 Unauthorized: the API key is missing or wrong";
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body.detail ?? body.message;
    const message = typeof error === "string" ? error : error?.message ?? JSON.stringify(error);
    return `${response.status}: ${message}`;
  } catch {
    return `${response.status} ${response.statusText}${text ? ": " + text.slice(0, 300) : ""}`;
  }
}

// Reads server-sent events, calling onData with each `data:` payload (a string).
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
      if (data.length) onData(data.join("\n"));
    }
  }
}

// The generated text; in FIM mode set between the code before and after the cursor, so it reads in place.
function render(view, text, around) {
  if (!around) {
    view.output.textContent = text;
    return;
  }
  const part = (cls, t) => Object.assign(document.createElement(cls === "middle" ? "mark" : "span"),
                                         { className: cls, textContent: t });
  view.output.replaceChildren(part("context", around.before), part("middle", text), part("context", around.after));
}

// One streamed request into one pane; resolves with the generated text ("" on failure).
async function run(view, endpoint) {
  resetPane(view);
  let request;
  try {
    request = buildRequest(endpoint);
  } catch (e) {
    showError(view, e.message);
    return "";
  }
  const controller = new AbortController();
  running.push(controller);
  const meter = new Meter(view);
  let text = "";
  let failed = false;
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
  if (endpoint.key) headers.Authorization = "Bearer " + endpoint.key;
  try {
    const response = await fetch(request.url, { method: "POST", headers, body: JSON.stringify(request.body),
                                                 signal: controller.signal, credentials: "omit" });
    if (!response.ok) {
      showError(view, await failureMessage(response));
      return "";
    }
    await readEvents(response, (data) => {
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) {
        failed = true;
        showError(view, typeof event.error === "string" ? event.error : event.error.message);
        return;
      }
      if (request.kind === "tgi") {
        if (event.token && !event.token.special) text += event.token.text;
        if (event.token) meter.add(1);
        // the last event carries the whole text, detokenized at once: show that one
        if (typeof event.generated_text === "string") text = event.generated_text;
      } else {
        const choice = event.choices?.[0];
        const piece = request.kind === "chat" ? choice?.delta?.content : choice?.text;
        if (typeof piece === "string" && piece.length) {
          text += piece;
          meter.add(1);
        }
        if (event.usage) meter.draw(event.usage.completion_tokens);
      }
      render(view, text, request.around);
    });
    if (!failed) setState(view, "done");
  } catch (e) {
    if (e.name === "AbortError") {
      view.stats.textContent += " · stopped";
      setState(view, "done");
    } else if (e instanceof TypeError && !endpoint.base) {
      showError(view, "lost the connection to this server: is it still running?");
    } else if (e instanceof TypeError) {  // fetch says no more than this when CORS refuses, by design
      showError(view, `could not reach ${endpoint.base}: it is not running, or it does not allow ` +
                      `this page's origin (start it with --cors-allow-origin ${location.origin})`);
    } else {
      showError(view, e.message);
    }
    failed = true;
  } finally {
    running = running.filter((c) => c !== controller);
  }
  return failed ? "" : text;
}

// The second server's FIM tokens, when it is a codefoundry server that tells them.
async function otherFim(base) {
  try {
    const r = await fetch(base + "/ui/model.json", { credentials: "omit" });
    if (r.ok) return (await r.json()).fim;
  } catch { /* not a codefoundry server, or it does not allow this origin */ }
  return modelInfo?.fim ?? null;
}

function addTurn(role, content) {
  const li = document.createElement("li");
  li.dataset.role = role;
  li.dataset.content = content;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role + ": ";
  li.append(who, content);
  $("conversation").append(li);
}

async function generate() {
  if (running.length) return;
  $("generate").disabled = true;
  $("stop-button").disabled = false;
  const self = { base: "", key: $("api-key").value, api: $("api").value, model: modelInfo?.model_id,
                 fim: modelInfo?.fim };
  const jobs = [run(pane("self"), self)];
  const comparing = $("compare").checked;
  if (comparing) {
    const view = pane("other");
    const base = $("other-url").value.trim().replace(/\/+$/, "");
    if (!/^https?:\/\/[^/]/.test(base)) {
      resetPane(view);
      showError(view, "enter the second server's URL (http://host:port)");
    } else {
      const other = { base, key: $("other-key").value, api: $("other-api").value,
                      model: $("other-model").value.trim() || undefined,
                      fim: mode() === "fim" ? await otherFim(base) : null };
      jobs.push(run(view, other));
    }
  }
  const [reply] = await Promise.all(jobs);
  if (mode() === "chat" && reply) {
    addTurn("user", $("user-message").value);
    addTurn("assistant", reply);
    $("user-message").value = "";
  }
  $("stop-button").disabled = true;
  showMode();
}

// ---- page wiring ----

function showMode() {
  const m = mode();
  $("completion-input").hidden = m !== "completion";
  $("chat-input").hidden = m !== "chat";
  $("fim-input").hidden = m !== "fim";
  $("api-field").hidden = m === "chat";
  const noFim = m === "fim" && modelInfo !== null && !modelInfo.fim;
  $("fim-note").textContent = m !== "fim" || modelInfo === null ? ""
    : noFim ? "This model has no fill-in-the-middle tokens: FIM mode is not available for it."
    : `Sent as ${modelInfo.fim.prefix}before${modelInfo.fim.suffix}after${modelInfo.fim.middle}; ` +
      "the model writes the middle.";
  // the server refuses chat for a model without its own template (422) rather than guess a format
  const noChat = m === "chat" && modelInfo !== null && !modelInfo.chat_template;
  $("chat-note").textContent = noChat
    ? "This model has no chat template: chat mode is not available for it (use completion mode)." : "";
  $("generate").disabled = noFim || noChat || running.length > 0;
  // OpenAI's API has no top_k (the server refuses unknown OpenAI parameters): only a TGI request carries it
  const tgi = m !== "chat" && ($("api").value === "tgi" || ($("compare").checked && $("other-api").value === "tgi"));
  $("top-k").disabled = !tgi;
  $("top-k-note").textContent = tgi ? "" : "Not sent: OpenAI's API has no top_k (TGI's /generate_stream takes it).";
}

function keep(id, storeKey) {
  const field = $(id);
  field.value = sessionStorage.getItem(storeKey) ?? "";
  field.addEventListener("input", () => sessionStorage.setItem(storeKey, field.value));
}

async function loadModel() {
  try {
    const r = await fetch("/ui/model.json");
    if (!r.ok) throw new Error(await failureMessage(r));
    modelInfo = await r.json();
    $("model-id").textContent = modelInfo.model_id;
    document.body.dataset.ready = "true";
  } catch (e) {
    $("model-id").textContent = "unknown (" + e.message + ")";
  }
  showMode();
}

document.addEventListener("DOMContentLoaded", () => {
  keep("api-key", KEY_STORE.self);
  keep("other-key", KEY_STORE.other);
  keep("other-url", URL_STORE);
  $("own-origin").textContent = location.origin;
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showMode);
  $("compare").addEventListener("change", () => {
    $("compare-fields").hidden = !$("compare").checked;
    $("pane-other").hidden = !$("compare").checked;
    showMode();
  });
  $("api").addEventListener("change", showMode);
  $("other-api").addEventListener("change", showMode);
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("stop-button").addEventListener("click", () => running.forEach((c) => c.abort()));
  $("clear-chat").addEventListener("click", () => $("conversation").replaceChildren());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
    if (e.key === "Escape" && running.length) running.forEach((c) => c.abort());
  });
  loadModel();
});
