"""Speaker diarization engines (who spoke when): sherpa-onnx (pyannote segmentation + a speaker embedding,
`sherpa`) and NeMo Sortformer (`sortformer`). The types they share, and that the services use, are in
`talkies.engines.diarization.protocol`; nothing heavy is imported here."""
