// talkies playground: plain ES module, no build step, no network beyond this server.
// Every URL is relative to the server root, found from this file's own URL (<root>/ui/static/app.js),
// so the page works behind a reverse proxy that mounts talkies under a path prefix.

const ROOT = new URL("../../", import.meta.url);
const TOKEN_KEY = "talkies-token";
const $ = (id) => document.getElementById(id);

let models = [];
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
  fillSelect($("asr-model"), models.filter((m) => m.modality === "asr"));
  fillSelect($("tts-model"), models.filter((m) => m.modality === "tts"));
  await loadVoices();
}

function fillSelect(select, list) {
  select.replaceChildren(
    ...list.map((m) => {
      const option = new Option(m.available ? m.id : `${m.id} (unavailable)`, m.id);
      option.disabled = !m.available;
      if (!m.available) option.title = m.unavailable_reason || "";
      return option;
    }),
  );
  const first = list.find((m) => m.available);
  if (first) select.value = first.id;
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
  const voices = (await response.json()).voices;
  const name = (v) => v.voice ?? v.id ?? v.name;
  $("tts-voices").replaceChildren(...voices.map((v) => new Option(v.origin ? `${name(v)} (${v.origin})` : "", name(v))));
  const preferred = voices.find((v) => v.default) || voices[0];
  $("tts-voice").value = preferred ? name(preferred) : "";
}

async function refreshModels() {
  const [listed, ps] = await Promise.all([api("v1/models"), api("api/ps")]);
  if (!listed.ok || !ps.ok) {
    status(`Could not read the models: ${await errorText(listed.ok ? ps : listed)}`, true);
    return;
  }
  models = (await listed.json()).data;
  const resident = Object.fromEntries((await ps.json()).models.map((row) => [row.model, row]));
  const rows = models.map((m) => {
    const row = resident[m.id];
    const tr = document.createElement("tr");
    const state = m.available ? (row?.loaded ? "loaded" : "not loaded") : `unavailable: ${m.unavailable_reason}`;
    const memory = row?.rss_bytes ?? row?.memory_bytes;
    const cells = [
      m.id,
      m.modality,
      m.executor,
      state,
      row?.idle_seconds ?? "",
      row?.in_flight ?? "",
      row?.queued ?? "",
      memory ? `${(memory / 2 ** 20).toFixed(0)} MiB` : "",
    ];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.append(td);
    }
    if (!m.available) tr.classList.add("unavailable");
    const action = document.createElement("td");
    if (m.available) {
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
  });
  $("models-table").tBodies[0].replaceChildren(...rows);
}

async function load(id) {
  status(`Loading ${id}…`);
  const response = await api(`api/ps/${encodeURIComponent(id)}`, { method: "POST" });
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

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
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
    const play = () => {
      const audio = $("source-audio");
      audio.currentTime = segment.start;
      stopAt = segment.end;
      audio.play().catch(() => {});
    };
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
  status("Transcribing…");
  const started = performance.now();
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
    } else {
      $("transcript").textContent = await response.text();
    }
    $("asr-time").textContent = `(${((performance.now() - started) / 1000).toFixed(2)} s)`;
    status("Done.");
    if (file) showSource(file);
  } finally {
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
  $("audio-file").addEventListener("change", () => {
    recorded = null;
    $("record-state").textContent = "";
    if ($("audio-file").files[0]) showSource($("audio-file").files[0]);
  });
  $("tts-model").addEventListener("change", () => loadVoices());
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
