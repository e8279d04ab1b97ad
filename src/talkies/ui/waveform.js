// A transcript on its audio: the source's waveform (decoded in the browser, drawn on a canvas) with one
// clickable region per segment, coloured per speaker when the transcript is diarized. Activating a
// region plays that span of the audio. Positions are set through the CSSOM (element.style), which the
// page's Content-Security-Policy allows, unlike style attributes in markup.

const PEAK_COLUMNS = 800;
const SPEAKER_CLASSES = 6;

async function peaks(blob) {
  const context = new (window.AudioContext || window.webkitAudioContext)();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const data = audio.getChannelData(0);
    const step = Math.max(1, Math.floor(data.length / PEAK_COLUMNS));
    const columns = [];
    for (let start = 0; start < data.length; start += step) {
      let peak = 0;
      for (let i = start; i < Math.min(data.length, start + step); i++) peak = Math.max(peak, Math.abs(data[i]));
      columns.push(peak);
    }
    return { columns, duration: audio.duration };
  } finally {
    context.close();
  }
}

function draw(canvas, columns) {
  const width = (canvas.width = canvas.clientWidth || PEAK_COLUMNS);
  const height = (canvas.height = canvas.clientHeight || 96);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.fillStyle = getComputedStyle(canvas).color;
  const scale = Math.max(...columns, 1e-6);
  const barWidth = width / columns.length;
  columns.forEach((peak, i) => {
    const h = Math.max(1, (peak / scale) * (height - 4));
    g.fillRect(i * barWidth, (height - h) / 2, Math.max(1, barWidth - 0.5), h);
  });
}

function timeLabel(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
}

// Regions for `segments` over the waveform of `blob`; `play(start, end)` plays a span of the audio.
export async function showWaveform(container, blob, segments, play) {
  const canvas = container.querySelector("canvas");
  const layer = container.querySelector(".regions");
  layer.replaceChildren();
  container.hidden = !blob || segments.length === 0;
  if (container.hidden) return;
  let duration = Math.max(...segments.map((s) => s.end), 0.001);
  try {
    const drawn = await peaks(blob);
    duration = Math.max(drawn.duration, duration);
    draw(canvas, drawn.columns);
  } catch {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height); // undecodable here: regions only
  }
  const speakers = [...new Set(segments.map((s) => s.speaker ?? s.channel ?? ""))];
  for (const segment of segments) {
    const speaker = segment.speaker ?? segment.channel ?? "";
    const region = document.createElement("button");
    region.type = "button";
    region.className = `region speaker-${speakers.indexOf(speaker) % SPEAKER_CLASSES}`;
    region.dataset.start = String(segment.start);
    region.dataset.end = String(segment.end);
    region.style.left = `${(100 * segment.start) / duration}%`;
    region.style.width = `${(100 * Math.max(segment.end - segment.start, 0)) / duration}%`;
    const who = speaker ? `${speaker}: ` : "";
    region.title = `${timeLabel(segment.start)}–${timeLabel(segment.end)} ${who}${segment.text.trim()}`;
    region.setAttribute("aria-label", `Play ${region.title}`);
    region.addEventListener("click", () => play(segment.start, segment.end));
    layer.append(region);
  }
}
