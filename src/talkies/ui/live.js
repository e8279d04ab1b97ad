// The playground's live mode: the microphone streamed to the realtime transcription WebSocket
// (GET v1/realtime?intent=transcription, docs/realtime.md), interim and final text as they arrive.
// The token travels as the browser subprotocol (a page cannot set headers on a WebSocket).

const WORKLET = new URL("mic-worklet.js", import.meta.url);

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// Start a live session; resolves to a stop() function. `view` shows the text:
// view.final(itemId, text), view.interim(itemId, text), view.state(text), view.error(text).
export async function startLive({ root, model, language, token, view }) {
  const url = new URL(`v1/realtime?intent=transcription&model=${encodeURIComponent(model)}`, root);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const protocols = ["realtime"];
  if (token) protocols.push(`openai-insecure-api-key.${token}`);
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule(WORKLET);
  const socket = new WebSocket(url, protocols);
  const interim = new Map(); // item id -> text so far
  let stopped = false;

  const stop = () => {
    if (stopped) return;
    stopped = true;
    stream.getTracks().forEach((track) => track.stop());
    context.close().catch(() => {});
    if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
  };

  socket.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    switch (event.type) {
      case "session.created": {
        const transcription = { model };
        if (language) transcription.language = language;
        socket.send(JSON.stringify({
          type: "session.update",
          session: { type: "transcription", audio: { input: { transcription } } },
        }));
        break;
      }
      case "session.updated":
        view.state("Listening…");
        break;
      case "input_audio_buffer.speech_started":
        view.state("Hearing speech…");
        break;
      case "input_audio_buffer.speech_stopped":
        view.state("Transcribing…");
        break;
      case "conversation.item.input_audio_transcription.delta":
        interim.set(event.item_id, (interim.get(event.item_id) || "") + event.delta);
        view.interim(event.item_id, interim.get(event.item_id));
        break;
      case "conversation.item.input_audio_transcription.completed":
        interim.delete(event.item_id);
        view.final(event.item_id, event.transcript);
        view.state("Listening…");
        break;
      case "conversation.item.input_audio_transcription.failed":
      case "error":
        view.error((event.error && event.error.message) || event.type);
        break;
      default:
        break;
    }
  });
  socket.addEventListener("close", (event) => {
    if (!stopped) view.error(event.code === 1006 ? "the server refused the connection (token?)" : `closed (${event.code}) ${event.reason}`);
    stop();
    view.closed();
  });

  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "mic-to-pcm16");
  node.port.onmessage = (message) => {
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(message.data) }));
    }
  };
  source.connect(node);
  return stop;
}
