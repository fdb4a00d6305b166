"""Where the layers of a TensorRT build run: the builder's DLA/GPU placement and the built engine's
per-layer information (``IEngineInspector``), reported after every build.

* :func:`dla_placement` asks ``IBuilderConfig.can_run_on_DLA(layer)`` for each network layer of a DLA
  build (TensorRT 8.x-10.7, 11.4.1+): those layers go to the DLA, the rest fall back to the GPU.
* :func:`engine_layers` deserializes the plan and asks ``ICudaEngine.create_engine_inspector()``
  (TensorRT 8.2+) for ``LayerInformationFormat.JSON``; the build sets ``ProfilingVerbosity.DETAILED``
  so each layer comes with its type, precision and tactic.

Both take the ``tensorrt`` module as an argument and use TensorRT's real Python API names.
"""

from __future__ import annotations

import json
from typing import Any


def _type_name(layer: Any) -> str:
    return str(getattr(layer, "type", "?")).rsplit(".", 1)[-1]


def dla_placement(trt: Any, network: Any, config: Any) -> dict[str, Any] | None:
    """``{"dla_core", "layers_on_dla", "layers_on_gpu", "gpu_fallback": [...], "layers": [...]}`` for a DLA
    build; None for a GPU build."""
    if config.default_device_type != trt.DeviceType.DLA:
        return None
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        on_dla = bool(config.can_run_on_DLA(layer))
        layers.append({"name": layer.name, "type": _type_name(layer), "device": "DLA" if on_dla else "GPU"})
    gpu = [entry["name"] for entry in layers if entry["device"] == "GPU"]
    return {"dla_core": int(config.DLA_core), "layers_on_dla": len(layers) - len(gpu), "layers_on_gpu": len(gpu),
            "gpu_fallback": gpu, "layers": layers}


def engine_layers(trt: Any, serialized: Any, logger: Any, dla_core: int = -1) -> dict[str, Any]:
    """The built engine's layer list from the engine inspector, or ``{"available": False, "reason"}``."""
    try:
        runtime = trt.Runtime(logger)
        if dla_core >= 0:
            runtime.DLA_core = dla_core
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            return {"available": False, "reason": "the plan did not deserialize for inspection"}
        if not hasattr(engine, "create_engine_inspector"):
            return {"available": False, "reason": f"TensorRT {trt.__version__} has no engine inspector (8.2+)"}
        text = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        info = json.loads(text)
    except Exception as e:  # noqa: BLE001 - the report is best effort; the engine itself is fine
        return {"available": False, "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    return {"available": True, "num_layers": len(layers), "layers": layers,
            "bindings": info.get("Bindings", []) if isinstance(info, dict) else []}


def summary(placement: dict[str, Any] | None, inspected: dict[str, Any] | None) -> str:
    """One line for the CLI: where the layers run."""
    parts = []
    if placement:
        parts.append(f"DLA core {placement['dla_core']}: {placement['layers_on_dla']} layers on the DLA, "
                     f"{placement['layers_on_gpu']} fall back to the GPU")
    else:
        parts.append("all layers on the GPU")
    if inspected and inspected.get("available"):
        parts.append(f"engine has {inspected['num_layers']} fused layers (artifact/layers.json)")
    elif inspected:
        parts.append(f"no layer report: {inspected.get('reason')}")
    return "; ".join(parts)


__all__ = ["dla_placement", "engine_layers", "summary"]
