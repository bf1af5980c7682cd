// The page: list the models, stream a completion from POST /v1/completions into the output as it arrives.
"use strict";
const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("charlm-key") || "";
let models = [];
let running = null; // the AbortController of the request in flight

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "dim";
}

function describe(card) {
  const f = card.charlm || {};
  const parts = [`${f.kind || "?"} ${f.level || ""} model`];
  if (f.cell) parts.push(`${f.layers}x${f.hidden} ${f.cell}`);
  if (f.parameters) parts.push(`${f.parameters.toLocaleString()} parameters`);
  if (f.step !== undefined) parts.push(`${f.step.toLocaleString()} steps`);
  if (f.best_valid_loss !== undefined) parts.push(`best validation loss ${f.best_valid_loss.toFixed(3)}`);
  if (f.valid_bpc !== undefined) parts.push(`${f.valid_bpc.toFixed(3)} bits/char`);
  if (f.train_seconds !== undefined) parts.push(`trained ${Math.round(f.train_seconds)} s`);
  return parts.join(" · ");
}

async function loadModels() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) {
    $("key-form").hidden = false;
    status("this server needs its API key", true);
    return;
  }
  const body = await r.json();
  models = body.data || [];
  $("key-form").hidden = true;
  $("model").replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  showFigures();
  status("");
}

function showFigures() {
  const card = models.find((m) => m.id === $("model").value);
  $("figures").textContent = card ? describe(card) : "";
}

function request() {
  const body = {
    model: $("model").value,
    prompt: $("prompt").value,
    max_tokens: Number($("max_tokens").value) || 300,
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value) || 1,
    stream: true,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

// Server-sent events: "data: {json}" blocks separated by a blank line, ending with "data: [DONE]".
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function generate() {
  if (running) return;
  const body = request();
  $("shown-prompt").textContent = body.prompt;
  $("text").textContent = "";
  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  status("generating…");
  let finish = null;
  try {
    const r = await fetch("/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      if (r.status === 401) $("key-form").hidden = false;
      throw new Error((err.error && err.error.message) || `HTTP ${r.status}`);
    }
    const seed = r.headers.get("x-charlm-seed");
    for await (const data of events(r)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const c of chunk.choices) {
        $("text").textContent += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    const chars = $("text").textContent.length;
    status(`seed ${seed} · ${chars.toLocaleString()} characters · finished: ${finish === "length" ? "length" : "stop"}`);
  } catch (e) {
    if (e.name === "AbortError") status("stopped");
    else status(e.message, true);
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => running && running.abort());
$("model").addEventListener("change", showFigures);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate();
});
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = $("key").value;
  sessionStorage.setItem("charlm-key", apiKey);
  loadModels();
});
loadModels().catch((e) => status(e.message, true));
