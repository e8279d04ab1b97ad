"""faster-whisper (CTranslate2): `engine.WhisperEngine`, and `timeline` for batched VAD clips."""
