"""A stand-in for JetPack's trtexec (none is installed here) that speaks its command line and its output
formats: the ``&&&& RUNNING TensorRT.trtexec [TensorRT vNNNNNN]`` banner, ``--onnx/--saveEngine`` builds,
``--timingCacheFile``, and ``--loadEngine/--loadInputs/--shapes/--exportOutput`` runs whose JSON has the
layout trtexec's exportJSONOutput writes. The "engine" records its ONNX, which ONNX Runtime then runs.

Usage: fake_trtexec.py VERSION_CODE ARGS...   (VERSION_CODE e.g. 100300 for TensorRT 10.3.0)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    code, args = sys.argv[1], sys.argv[2:]
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec {' '.join(args)}")
    if "--help" in args:
        return 0
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if "onnx" in opts:
        Path(opts["saveEngine"]).write_text(json.dumps({"onnx": str(Path(opts["onnx"]).resolve()), "argv": args}))
        if "timingCacheFile" in opts:
            cache = Path(opts["timingCacheFile"])
            cache.write_bytes((cache.read_bytes() if cache.is_file() else b"") + b"tactic;")
        print("&&&& PASSED TensorRT.trtexec")
        return 0
    import onnxruntime as ort

    engine = json.loads(Path(opts["loadEngine"]).read_text())
    name, path = opts["loadInputs"].split(":", 1)
    shape = [int(d) for d in opts["shapes"].split(":", 1)[1].split("x")]
    sess = ort.InferenceSession(engine["onnx"], providers=["CPUExecutionProvider"])
    out = sess.run(None, {name: np.fromfile(path, "<f4").reshape(shape)})[0]
    values = ", ".join(f"{v:.9g}" for v in out.ravel())
    dims = "x".join(str(d) for d in out.shape)
    Path(opts["exportOutput"]).write_text(f'[\n  {{ "name" : "{sess.get_outputs()[0].name}"\n'
                                          f'  , "dimensions" : "{dims}"\n  , "values" : [ {values} ]\n  }}\n]\n')
    print("&&&& PASSED TensorRT.trtexec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
