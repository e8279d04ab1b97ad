from tests.fixtures.whisper import install_whisper, whisper_data_dir, whisper_micro_dir

__all__ = ["install_whisper", "whisper_data_dir", "whisper_micro_dir"]
