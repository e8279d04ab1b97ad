// The playground's model and voice catalog: model selects grouped by what runs now (installed),
// what runs after a download, and what cannot run here (with the reason); downloads through
// POST /api/pull with a progress bar; the searchable voice list from /v1/audio/voices.
// No state of its own beyond the DOM: app.js passes its `api` helper in.

const GROUPS = [
  ["installed", "Installed"],
  ["downloadable", "Download first"],
  ["unavailable", "Unavailable here"],
];

export function modelGroup(model) {
  if (!model.available) return "unavailable";
  return model.installed ? "installed" : "downloadable";
}

export function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  return `${(bytes / 2 ** 10).toFixed(0)} KiB`;
}

function optionLabel(model) {
  const group = modelGroup(model);
  if (group === "downloadable") return `${model.id} (download ${size(model.download_bytes) || "size unknown"})`;
  if (group === "unavailable") return `${model.id} (unavailable)`;
  return model.id;
}

// The model the page opens on: the default when it is installed, else the first installed model,
// else the default (its first request downloads it), else the first that could run.
export function initialModel(list) {
  const runnable = list.filter((m) => m.available);
  const byDefault = runnable.find((m) => m.default);
  if (byDefault?.installed) return byDefault.id;
  const installed = runnable.find((m) => m.installed);
  return (installed || byDefault || runnable[0])?.id;
}

export function fillModelSelect(select, list) {
  const previous = select.value;
  const groups = GROUPS.map(([key, label]) => {
    const members = list.filter((m) => modelGroup(m) === key);
    if (members.length === 0) return null;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const m of members) {
      const option = new Option(optionLabel(m), m.id);
      option.disabled = !m.available;
      if (!m.available) option.title = m.unavailable_reason || "";
      group.append(option);
    }
    return group;
  }).filter(Boolean);
  select.replaceChildren(...groups);
  const keep = list.find((m) => m.id === previous && m.available);
  const chosen = keep ? keep.id : initialModel(list);
  if (chosen) select.value = chosen;
}

// --- downloads ------------------------------------------------------------------------------------

// POST /api/pull and read its NDJSON lines; onProgress(completed, total) as bytes arrive.
// Resolves on {"status": "success"}, rejects with the server's message on an {"error"} line.
export async function pullModel(api, id, onProgress) {
  const response = await api("api/pull", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: id }),
  });
  if (!response.ok && !(response.headers.get("content-type") || "").includes("ndjson")) {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const files = {};
  let total = null;
  let buffer = "";
  let outcome = null;
  const handle = (line) => {
    if (!line.trim()) return;
    const event = JSON.parse(line);
    if (event.error) outcome = new Error(event.error);
    else if (event.status === "success") outcome = "success";
    else if (event.download_bytes !== undefined) total = event.download_bytes;
    else if (event.completed !== undefined) files[event.status] = event.completed;
    const completed = Object.values(files).reduce((a, b) => a + b, 0);
    onProgress(completed, total);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      handle(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
    }
  }
  handle(buffer);
  if (outcome instanceof Error) throw outcome;
  if (outcome !== "success") throw new Error("the download ended without a result");
}

export function progressBar(model, completed, total) {
  const bar = document.createElement("progress");
  bar.max = total || model.download_bytes || 1;
  bar.value = Math.min(completed || 0, bar.max);
  bar.setAttribute("aria-label", `Downloading ${model.id}`);
  const label = document.createElement("span");
  label.className = "muted";
  label.textContent = ` ${size(completed || 0)} of ${size(bar.max)}`;
  const wrap = document.createElement("span");
  wrap.className = "pull-progress";
  wrap.append(bar, label);
  return wrap;
}

// --- voices ---------------------------------------------------------------------------------------

const voiceName = (v) => v.voice ?? v.id ?? v.name;

function voiceLabel(v) {
  const extra = [v.default ? "default" : "", v.origin || "", (v.aliases || []).join(", ")].filter(Boolean);
  return extra.length ? `${voiceName(v)} (${extra.join("; ")})` : voiceName(v);
}

// The searchable list: `list` (a listbox <select>) shows the voices whose name, origin or aliases
// contain the search text; picking one writes it into the voice field, where blends stay typed.
export function showVoices(voices, { search, list, field }) {
  const needle = search.value.trim().toLowerCase();
  const matching = voices.filter((v) => !needle || voiceLabel(v).toLowerCase().includes(needle));
  list.replaceChildren(...matching.map((v) => new Option(voiceLabel(v), voiceName(v))));
  const current = matching.find((v) => voiceName(v) === field.value);
  if (current) list.value = voiceName(current);
  list.setAttribute("aria-description", `${matching.length} of ${voices.length} voices`);
}

export function setupVoicePicker(elements, getVoices) {
  const { search, list, field } = elements;
  search.addEventListener("input", () => showVoices(getVoices(), elements));
  list.addEventListener("change", () => {
    if (list.value) field.value = list.value;
  });
  field.addEventListener("input", () => {
    if ([...list.options].some((o) => o.value === field.value)) list.value = field.value;
  });
}
