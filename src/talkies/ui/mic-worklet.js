// AudioWorklet for the playground's live mode: microphone (any rate) -> 24 kHz mono PCM16 in 50 ms
// pieces, posted to the page, which sends them as `input_audio_buffer.append` events.
// Linear interpolation is enough for speech recognition; the phase carries across render quanta.

const OUT_RATE = 24000;
const PIECE = OUT_RATE / 20; // 50 ms

class MicToPcm16 extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.position = 0; // where the next output sample falls, in input samples, from `previous`
    this.previous = 0; // the last input sample of the block before
    this.piece = new Int16Array(PIECE);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    // sample i of this block is at index i + 1 of [previous, ...channel]
    while (this.position <= channel.length - 1 + 1e-9) {
      const at = this.position;
      const left = Math.floor(at);
      const fraction = at - left;
      const a = left === 0 ? this.previous : channel[left - 1];
      const b = channel[Math.min(left, channel.length - 1)];
      const value = a + (b - a) * fraction;
      this.piece[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
      if (this.filled === PIECE) {
        this.port.postMessage(this.piece.buffer, [this.piece.buffer]);
        this.piece = new Int16Array(PIECE);
        this.filled = 0;
      }
      this.position += this.step;
    }
    this.position -= channel.length;
    this.previous = channel[channel.length - 1];
    return true;
  }
}

registerProcessor("mic-to-pcm16", MicToPcm16);
