"""Qwen3-TTS: the `qwen3_tts` executor (engine.py), its runtimes (runtime.py), voice catalogs (voices.py)."""
