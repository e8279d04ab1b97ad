// talkies playground: plain ES module, no build step, no network beyond this server.
// Every URL is relative to the server root, found from this file's own URL (<root>/ui/static/app.js),
// so the page works behind a reverse proxy that mounts talkies under a path prefix.

import { fillModelSelect, modelGroup, progressBar, pullModel, setupVoicePicker, showVoices, size } from "./catalog.js";
import { showWaveform } from "./waveform.js";
import { startLive } from "./live.js";

const ROOT = new URL("../../", import.meta.url);
const TOKEN_KEY = "talkies-token";
const $ = (id) => document.getElementById(id);

let models = [];
let voices = []; // the Speak tab model's catalog (/v1/audio/voices)
const pulling = new Map(); // model id -> {completed, total}: downloads this page started
let pendingLoads = 0; // POST /api/ps requests this page is waiting for
let refreshTimer = null;
let recorded = null; // Blob from the microphone
let stopAt = null; // end of the segment being played

// --- HTTP ------------------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-input").value = "";
    dialog.addEventListener(
      "close",
      () => {
        const value = $("token-input").value.trim();
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        $("token-button").hidden = !token();
        resolve(Boolean(value));
      },
      { once: true },
    );
    dialog.showModal();
    $("token-input").focus();
  });
}

async function api(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(new URL(path, ROOT), { ...options, headers });
  if (response.status === 401 && !retried) {
    if (await askToken()) return api(path, options, true);
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message || body.detail || JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// --- tabs ------------------------------------------------------------------------------------------

const TABS = ["transcribe", "speak", "models"];

function showTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`view-${tab}`).hidden = !selected;
  }
  if (name === "models") refreshModels();
}

function setupTabs() {
  TABS.forEach((name, index) => {
    const button = $(`tab-${name}`);
    button.addEventListener("click", () => showTab(name));
    button.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = TABS[(index + step + TABS.length) % TABS.length];
      showTab(next);
      $(`tab-${next}`).focus();
    });
  });
}

// --- models ----------------------------------------------------------------------------------------

async function loadModels() {
  const response = await api("v1/models");
  if (!response.ok) {
    status(`Could not list models: ${await errorText(response)}`, true);
    return;
  }
  models = (await response.json()).data;
  showModelChoices();
  await loadVoices();
}

function showModelChoices() {
  fillModelSelect($("asr-model"), models.filter((m) => m.modality === "asr"));
  fillModelSelect($("tts-model"), models.filter((m) => m.modality === "tts"));
  showModelNote("asr-model");
  showModelNote("tts-model");
}

// Next to a model select: nothing for an installed model, else its download size and a Download button
// (or the progress of its download).
function showModelNote(selectId) {
  const note = $(`${selectId}-note`);
  const model = modelInfo($(selectId).value);
  if (!model.id || modelGroup(model) !== "downloadable") {
    note.replaceChildren();
    return;
  }
  const progress = pulling.get(model.id) || model.pull;
  if (progress) {
    note.replaceChildren(progressBar(model, progress.completed, progress.total));
    return;
  }
  const text = document.createElement("span");
  text.className = "muted";
  text.textContent = `Not downloaded yet (${size(model.download_bytes) || "size unknown"}). `;
  note.replaceChildren(text, downloadButton(model));
}

function modelInfo(id) {
  return models.find((m) => m.id === id) || {};
}

async function loadVoices() {
  const model = $("tts-model").value;
  if (!model) return;
  const executor = modelInfo(model).executor || "";
  $("qwen3-fields").hidden = executor !== "qwen3_tts";
  $("voice-hint").textContent = executor.startsWith("kokoro")
    ? "Blend voices with +, e.g. af_heart+am_adam or af_heart(2)+am_adam(1)"
    : "";
  const response = await api(`v1/audio/voices?model=${encodeURIComponent(model)}`);
  if (!response.ok) {
    status(`Could not list voices: ${await errorText(response)}`, true);
    return;
  }
  voices = (await response.json()).voices;
  const name = (v) => v.voice ?? v.id ?? v.name;
  $("tts-voices").replaceChildren(...voices.map((v) => new Option(v.origin ? `${name(v)} (${v.origin})` : "", name(v))));
  const preferred = voices.find((v) => v.default) || voices[0];
  $("tts-voice").value = preferred ? name(preferred) : "";
  showVoices(voices, voicePicker());
}

function voicePicker() {
  return { search: $("voice-search"), list: $("voice-list"), field: $("tts-voice") };
}

const MODEL_GROUPS = [
  ["installed", "Installed"],
  ["downloadable", "Downloadable"],
  ["unavailable", "Unavailable here"],
];

async function refreshModels() {
  const [listed, ps] = await Promise.all([api("v1/models"), api("api/ps")]);
  if (!listed.ok || !ps.ok) {
    status(`Could not read the models: ${await errorText(listed.ok ? ps : listed)}`, true);
    return;
  }
  models = (await listed.json()).data;
  const state = await ps.json();
  const resident = Object.fromEntries(state.models.map((row) => [row.model, row]));
  const bodies = MODEL_GROUPS.map(([key, label]) => {
    const members = models.filter((m) => modelGroup(m) === key);
    if (members.length === 0) return null;
    const tbody = document.createElement("tbody");
    tbody.dataset.group = key;
    const heading = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "rowgroup";
    th.colSpan = 10;
    th.textContent = `${label} (${members.length})`;
    heading.append(th);
    tbody.append(heading, ...members.map((m) => modelRow(m, resident[m.id])));
    return tbody;
  }).filter(Boolean);
  $("models-table").replaceChildren($("models-table").caption, $("models-table").tHead, ...bodies);
  const busy = pendingLoads > 0 || pulling.size > 0 || models.some((m) => m.pull) || Object.keys(state.pulls || {}).length > 0;
  scheduleRefresh(busy);
}

function modelRow(m, row) {
  const tr = document.createElement("tr");
  tr.dataset.model = m.id;
  const state = !m.available ? `unavailable: ${m.unavailable_reason}` : row?.loaded ? "loaded" : m.installed ? "not loaded" : "not downloaded";
  const memory = row?.rss_bytes ?? row?.memory_bytes;
  const cells = [m.id, m.modality, m.executor, state, null, row?.idle_seconds ?? "", row?.in_flight ?? "", row?.queued ?? "", memory ? size(memory) : ""];
  for (const value of cells) {
    const td = document.createElement("td");
    if (value === null) td.append(downloadCell(m));
    else td.textContent = String(value);
    tr.append(td);
  }
  if (!m.available) tr.classList.add("unavailable");
  const action = document.createElement("td");
  if (m.available && m.installed) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = row?.loaded ? "Unload" : "Load";
    button.setAttribute("aria-label", `${button.textContent} ${m.id}`);
    button.addEventListener("click", () => (row?.loaded ? unload(m.id) : load(m.id)));
    action.append(button);
  }
  tr.append(action);
  return tr;
}

// The Download column: the size, a progress bar while a download runs (this page's, another client's,
// or a request's first use), or a Download button.
function downloadCell(m) {
  const progress = pulling.get(m.id) || m.pull;
  if (progress) return progressBar(m, progress.completed, progress.total);
  const text = document.createTextNode(m.download_bytes ? size(m.download_bytes) : m.installed ? "" : "size unknown");
  if (modelGroup(m) !== "downloadable") return text;
  const cell = document.createElement("span");
  cell.append(text, " ", downloadButton(m));
  return cell;
}

function downloadButton(m) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = "Download";
  button.setAttribute("aria-label", `Download ${m.id}`);
  button.addEventListener("click", () => download(m.id));
  return button;
}

async function download(id) {
  pulling.set(id, { completed: 0, total: modelInfo(id).download_bytes });
  status(`Downloading ${id}…`);
  showProgress();
  try {
    await pullModel(api, id, (completed, total) => {
      pulling.set(id, { completed, total });
      showProgress();
    });
    status(`Downloaded ${id}.`);
  } catch (error) {
    status(`Download of ${id} failed: ${error.message}`, true);
  } finally {
    pulling.delete(id);
    await refreshModels();
    showModelChoices();
  }
}

// Redraw what shows a download's progress, without waiting for the next poll.
function showProgress() {
  for (const [id, progress] of pulling) {
    const cell = document.querySelector(`#models-table tr[data-model="${CSS.escape(id)}"] td:nth-child(5)`);
    if (cell) cell.replaceChildren(progressBar(modelInfo(id), progress.completed, progress.total));
  }
  showModelNote("asr-model");
  showModelNote("tts-model");
}

// The Models tab polls itself while it is shown: every second while loads or downloads run (this page's,
// another client's, a request's first use), every few seconds otherwise, to notice new ones.
const REFRESH_BUSY_MS = 1000;
const REFRESH_IDLE_MS = 5000;

function scheduleRefresh(busy) {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (!$("view-models").hidden) {
    const delay = busy ? REFRESH_BUSY_MS : REFRESH_IDLE_MS;
    refreshTimer = setTimeout(() => refreshModels().catch((err) => status(err.message, true)), delay);
  }
}

// A request for a model that is not downloaded yet downloads it first: show that download's progress.
function watchFirstUse(id, label) {
  if (modelInfo(id).installed !== false) return () => {};
  let stopped = false;
  const poll = async () => {
    if (stopped) return;
    const response = await api(`v1/models/${encodeURIComponent(id)}`);
    if (!response.ok || stopped) return;
    const card = await response.json();
    const index = models.findIndex((m) => m.id === id);
    if (index >= 0) models[index] = card; // the note beside the select follows the download too
    if (card.installed) showModelChoices();
    else showProgress();
    if (card.pull) {
      const percent = card.pull.total ? ` ${Math.floor((100 * card.pull.completed) / card.pull.total)}%` : "";
      status(`${label}: downloading ${id} first…${percent} (${size(card.pull.completed)} of ${size(card.pull.total)})`);
    }
    if (!card.installed) setTimeout(() => poll().catch(() => {}), 1000);
  };
  poll().catch(() => {});
  return () => {
    stopped = true;
  };
}

async function load(id) {
  status(`Loading ${id}…`);
  pendingLoads += 1;
  scheduleRefresh(true);
  const response = await api(`api/ps/${encodeURIComponent(id)}`, { method: "POST" }).finally(() => {
    pendingLoads -= 1;
  });
  status(response.ok ? `Loaded ${id}.` : `Load failed: ${await errorText(response)}`, !response.ok);
  await refreshModels();
}

async function unload(id) {
  status(`Unloading ${id}…`);
  const response = await api(`api/ps/${encodeURIComponent(id)}`, { method: "DELETE" });
  status(response.ok ? `Unloaded ${id}.` : `Unload failed: ${await errorText(response)}`, !response.ok);
  await refreshModels();
}

// --- transcription ---------------------------------------------------------------------------------

function showSource(blob) {
  const audio = $("source-audio");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
}

async function toggleRecording() {
  const button = $("record");
  if (button.recorder) {
    button.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    status(`Microphone unavailable: ${error.message}`, true);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const parts = [];
  recorder.ondataavailable = (event) => parts.push(event.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    recorded = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
    $("audio-file").value = "";
    showSource(recorded);
    button.recorder = null;
    button.textContent = "Record from microphone";
    button.setAttribute("aria-pressed", "false");
    $("record-state").textContent = `Recorded ${(recorded.size / 1024).toFixed(0)} KiB`;
  };
  recorder.start(250);
  button.recorder = recorder;
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  $("record-state").textContent = "Recording…";
}

// --- live microphone (realtime WebSocket) --------------------------------------------------------

const liveLines = new Map(); // item id -> its line in #transcript

function liveLine(id) {
  if (!liveLines.has(id)) {
    const line = document.createElement("div");
    line.dataset.item = id;
    $("transcript").append(line);
    liveLines.set(id, line);
  }
  return liveLines.get(id);
}

const liveView = {
  interim(id, text) {
    const line = liveLine(id);
    line.className = "interim";
    line.textContent = text;
  },
  final(id, text) {
    const line = liveLine(id);
    line.className = "final";
    line.textContent = text;
  },
  state(text) {
    $("live-state").textContent = text;
  },
  error(text) {
    status(`Live transcription: ${text}`, true);
  },
  closed() {
    const button = $("live");
    button.stop = null;
    button.textContent = "Live transcription";
    button.setAttribute("aria-pressed", "false");
    $("live-state").textContent = "Stopped.";
  },
};

async function toggleLive() {
  const button = $("live");
  if (button.stop) {
    button.stop();
    return;
  }
  $("transcript").textContent = "";
  liveLines.clear();
  $("segments").hidden = true;
  try {
    button.stop = await startLive({
      root: ROOT,
      model: $("asr-model").value,
      language: $("asr-language").value.trim(),
      token: token(),
      view: liveView,
    });
  } catch (error) {
    status(`Microphone unavailable: ${error.message}`, true);
    return;
  }
  button.textContent = "Stop live transcription";
  button.setAttribute("aria-pressed", "true");
  $("live-state").textContent = "Connecting…";
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
}

function playSpan(start, end) {
  const audio = $("source-audio");
  audio.currentTime = start;
  stopAt = end;
  audio.play().catch(() => {});
}

const SPEAKER_COLOURS = 8; // style.css: .speaker-0 ... .speaker-7

function showSegments(segments) {
  const table = $("segments");
  const speakers = []; // in order of first appearance: each keeps its colour
  const rows = segments.map((segment) => {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    if (segment.speaker !== undefined) {
      if (!speakers.includes(segment.speaker)) speakers.push(segment.speaker);
      tr.classList.add(`speaker-${speakers.indexOf(segment.speaker) % SPEAKER_COLOURS}`);
      tr.dataset.speaker = segment.speaker;
    }
    for (const value of [clock(segment.start), clock(segment.end), segment.speaker ?? segment.channel ?? "", segment.text]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    const play = () => playSpan(segment.start, segment.end);
    tr.addEventListener("click", play);
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        play();
      }
    });
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
}

async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim())
        .join("\n");
      if (data && data !== "[DONE]") onEvent(JSON.parse(data));
    }
  }
}

async function transcribe(event) {
  event.preventDefault();
  const file = $("audio-file").files[0];
  const audio = file || recorded;
  if (!audio) {
    status("Choose a file or record something first.", true);
    return;
  }
  const format = $("asr-format").value;
  const stream = $("asr-stream").checked && (format === "json" || format === "text");
  const form = new FormData();
  form.append("file", audio, file ? file.name : "recording.webm");
  form.append("model", $("asr-model").value);
  if ($("asr-language").value.trim()) form.append("language", $("asr-language").value.trim());
  form.append("response_format", format);
  if ($("asr-diarization").checked) form.append("diarization", "true");
  if (format === "diarized_json" && $("asr-speakers").value) form.append("num_speakers", $("asr-speakers").value);
  if (stream) form.append("stream", "true");
  const button = $("transcribe");
  button.disabled = true;
  $("transcript").textContent = "";
  $("segments").hidden = true;
  $("waveform").hidden = true;
  status("Transcribing…");
  const started = performance.now();
  const stopWatching = watchFirstUse($("asr-model").value, "Transcribing");
  try {
    const response = await api("v1/audio/transcriptions", { method: "POST", body: form });
    if (!response.ok) {
      status(`Transcription failed: ${await errorText(response)}`, true);
      return;
    }
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("text/event-stream")) {
      await readEvents(response, (e) => {
        if (e.type === "transcript.text.delta") $("transcript").textContent += e.delta;
        else if (e.type === "transcript.text.done") $("transcript").textContent = e.text;
        else if (e.type === "error") status(`Transcription failed: ${e.error?.message || e.message}`, true);
      });
    } else if (type.startsWith("application/json")) {
      const body = await response.json();
      $("transcript").textContent = (body.text || "").trim();
      showSegments(body.segments || []);
      await showWaveform($("waveform"), audio, body.segments || [], playSpan);
    } else {
      $("transcript").textContent = await response.text();
    }
    $("asr-time").textContent = `(${((performance.now() - started) / 1000).toFixed(2)} s)`;
    status("Done.");
    if (file) showSource(file);
  } finally {
    stopWatching();
    button.disabled = false;
  }
}

// --- speech ----------------------------------------------------------------------------------------

const MIME = { mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", wav: "audio/wav", pcm: "audio/L16" };

function speechBody() {
  const body = {
    model: $("tts-model").value,
    input: $("tts-input").value,
    response_format: $("tts-format").value,
    speed: Number($("tts-speed").value || 1),
  };
  const voice = $("tts-voice").value.trim();
  if (voice) body.voice = voice;
  const instructions = $("tts-instructions").value.trim();
  if (instructions) body.instructions = instructions;
  if (!$("qwen3-fields").hidden) {
    for (const [id, key] of [
      ["tts-language", "language"],
      ["tts-temperature", "temperature"],
      ["tts-top-k", "top_k"],
      ["tts-top-p", "top_p"],
      ["tts-repetition", "repetition_penalty"],
      ["tts-max-tokens", "max_new_tokens"],
    ]) {
      const value = $(id).value.trim();
      if (value) body[key] = key === "language" ? value : Number(value);
    }
  }
  return body;
}

async function speak(event) {
  event.preventDefault();
  const body = speechBody();
  const button = $("speak");
  button.disabled = true;
  $("download").hidden = true;
  status("Synthesizing…");
  const started = performance.now();
  const stopWatching = watchFirstUse(body.model, "Synthesizing");
  try {
    const response = await api("v1/audio/speech", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      status(`Speech failed: ${await errorText(response)}`, true);
      return;
    }
    const audio = $("tts-audio");
    const mime = MIME[body.response_format];
    const parts = [];
    if (window.MediaSource && MediaSource.isTypeSupported(mime) && body.response_format === "mp3") {
      await streamInto(audio, response, mime, parts); // plays while the rest is still being synthesized
    } else {
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parts.push(value);
      }
      audio.src = URL.createObjectURL(new Blob(parts, { type: mime }));
    }
    const blob = new Blob(parts, { type: mime });
    const link = $("download");
    link.href = URL.createObjectURL(blob);
    link.download = `speech.${body.response_format}`;
    link.hidden = false;
    $("tts-time").textContent = `(${((performance.now() - started) / 1000).toFixed(2)} s, ${(blob.size / 1024).toFixed(0)} KiB)`;
    status("Done.");
    audio.play().catch(() => {});
  } finally {
    stopWatching();
    button.disabled = false;
  }
}

function streamInto(audio, response, mime, parts) {
  return new Promise((resolve, reject) => {
    const source = new MediaSource();
    audio.src = URL.createObjectURL(source);
    source.addEventListener(
      "sourceopen",
      async () => {
        try {
          const buffer = source.addSourceBuffer(mime);
          const reader = response.body.getReader();
          let first = true;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parts.push(value);
            buffer.appendBuffer(value);
            await new Promise((ok) => buffer.addEventListener("updateend", ok, { once: true }));
            if (first) {
              first = false;
              audio.play().catch(() => {});
            }
          }
          source.endOfStream();
          resolve();
        } catch (error) {
          reject(error);
        }
      },
      { once: true },
    );
  });
}

// --- start -----------------------------------------------------------------------------------------

function start() {
  setupTabs();
  $("transcribe-form").addEventListener("submit", (e) => transcribe(e).catch((err) => status(err.message, true)));
  $("speak-form").addEventListener("submit", (e) => speak(e).catch((err) => status(err.message, true)));
  $("record").addEventListener("click", () => toggleRecording());
  $("live").addEventListener("click", () => toggleLive());
  $("audio-file").addEventListener("change", () => {
    recorded = null;
    $("record-state").textContent = "";
    if ($("audio-file").files[0]) showSource($("audio-file").files[0]);
  });
  $("tts-model").addEventListener("change", () => {
    showModelNote("tts-model");
    loadVoices();
  });
  $("asr-model").addEventListener("change", () => showModelNote("asr-model"));
  setupVoicePicker(voicePicker(), () => voices);
  $("refresh-models").addEventListener("click", () => refreshModels());
  $("token-button").hidden = !token();
  $("token-button").addEventListener("click", () => askToken().then(() => loadModels()));
  $("source-audio").addEventListener("timeupdate", () => {
    const audio = $("source-audio");
    if (stopAt !== null && audio.currentTime >= stopAt) {
      audio.pause();
      stopAt = null;
    }
  });
  loadModels().catch((err) => status(err.message, true));
}

start();
