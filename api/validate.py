"""Runs inside a throw-away child process: load an uploaded file with the engine's safe loaders.

The parent (api.services.validation) forks it from a server process that already imported torch, gives
it a time limit, and reads one dict back through a pipe. A hostile file can at worst crash or hang this
child; the server only sees "could not be validated".
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from typing import Any

from services.architecture import audit_architecture, filter_weights
from services.cams import feature_map_size, resolve_layer
from services.checkpoints import LoadedModel, load_model
from services.datasets import load_dataset
from services.errors import AdvauditError, ConfigError
from services.feature_depths import pick_depths
from services.features import TORCHSCRIPT_REFUSAL
from services.filter_grid import render_filter_grid

PR_SET_PDEATHSIG = 1  # linux/prctl.h
MEMORY_BUDGET_BYTES = 8 * 1024**3  # address space a validation may add on top of the preloaded modules
CPU_THREADS = 2


def _architecture(
    loaded: LoadedModel, input_shape: list[int], filter_grid_path: str | None
) -> dict[str, Any]:
    """{"audit": the architecture audit document, "filter_grid": whether the first layer's grid was written}.

    A first convolution whose weight is not a module's (a functional call) has no grid; the audit stays.
    """
    audit = audit_architecture(loaded.network, tuple(input_shape), exported=loaded.exported)
    drawn = False
    if filter_grid_path and audit.layers:
        try:
            render_filter_grid(*filter_weights(loaded.network, audit.layers[0]), filter_grid_path)
            drawn = True
        except ConfigError:
            pass
    return {"audit": audit.to_dict(), "filter_grid": drawn}


def validate_model(
    *,
    path: str,
    input_shape: list[int],
    arch: str | None = None,
    num_classes: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    filter_grid_path: str | None = None,
) -> dict[str, Any]:
    """Load the checkpoint and run the dummy forward: its ModelInfo (without the temp path) and architecture.

    A model the architecture audit cannot take apart is still a valid model: "architecture_error" says why.
    """
    loaded = _load_on_cpu(path, input_shape, arch, num_classes, mean, std)
    info = loaded.info.to_dict()
    info.pop("source")
    try:
        info["architecture"] = _architecture(loaded, input_shape, filter_grid_path)
    except AdvauditError as error:
        info["architecture_error"] = str(error)
    return info


def model_architecture(
    *,
    path: str,
    input_shape: list[int],
    arch: str | None = None,
    num_classes: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    filter_grid_path: str | None = None,
) -> dict[str, Any]:
    """The architecture audit (and filter grid) of a model registered before either was kept."""
    loaded = _load_on_cpu(path, input_shape, arch, num_classes, mean, std)
    return _architecture(loaded, input_shape, filter_grid_path)


def validate_dataset(*, path: str, image_size: int | None = None) -> dict[str, Any]:
    """Open the dataset and read its first batch; its DatasetInfo (without the temp path)."""
    dataset = load_dataset(path, image_size=image_size)
    next(iter(dataset.batches(min(len(dataset), 8))))
    info = dataset.info.to_dict()
    info.pop("source")
    return info


def _load_on_cpu(
    path: str,
    input_shape: list[int],
    arch: str | None,
    num_classes: int | None,
    mean: list[float] | None,
    std: list[float] | None,
) -> LoadedModel:
    """The registered model as the checks below open it: on the CPU, as registered."""
    return load_model(
        path,
        input_shape=tuple(input_shape),
        arch=arch,
        num_classes=num_classes,
        mean=mean,
        std=std,
        device="cpu",
    )


def check_cam_layer(
    *,
    path: str,
    input_shape: list[int],
    layer: str,
    arch: str | None = None,
    num_classes: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> dict[str, Any]:
    """Refuse a Grad-CAM layer the engine would refuse; return the architecture audit for the cache."""
    loaded = _load_on_cpu(path, input_shape, arch, num_classes, mean, std)
    if not loaded.supports_hooks:
        raise ConfigError(
            "TorchScript archives do not support the hooks a CAM audit needs: register "
            "the weights with arch, or export the model with torch.export (.pt2); "
            "or use cam auto/none"
        )
    resolve_layer(loaded.network, layer)
    positions = math.prod(feature_map_size(loaded.named_module, loaded.network, layer, tuple(input_shape)))
    if positions < 2:
        raise ConfigError(
            f"layer {layer!r} outputs a 1×1 (or non-spatial) map at this input size: "
            "a CAM there is constant; pick an earlier conv layer"
        )
    audit = audit_architecture(loaded.network, tuple(input_shape), exported=loaded.exported)
    return {"audit": audit.to_dict()}


def check_feature_layers(
    *,
    path: str,
    input_shape: list[int],
    layers: list[str],
    arch: str | None = None,
    num_classes: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> dict[str, Any]:
    """Refuse feature layers the engine would refuse (unknown, running twice, not a map); {"depths": count}."""
    loaded = _load_on_cpu(path, input_shape, arch, num_classes, mean, std)
    if not loaded.supports_hooks:
        raise ConfigError(TORCHSCRIPT_REFUSAL)
    shape = (input_shape[0], input_shape[1], input_shape[2])
    audit = audit_architecture(loaded.network, shape, exported=loaded.exported)
    return {"depths": len(pick_depths(loaded.named_module, loaded.network, audit, shape, layers))}


ACTIONS = {
    "model": validate_model,
    "dataset": validate_dataset,
    "cam_layer": check_cam_layer,
    "feature_layers": check_feature_layers,
    "architecture": model_architecture,
}


def _limit_resources() -> None:
    """Cap memory and disable core dumps, so a hostile file cannot exhaust the host."""
    try:
        import resource

        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + MEMORY_BUDGET_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError):  # not Linux: the time limit still applies
        pass
    import torch

    torch.set_num_threads(CPU_THREADS)


def _die_with_parent() -> None:
    """SIGKILL this child when its parent (the forkserver, which exits with the server) goes, on Linux.

    The server kills a validation that outlasts its time limit; a server that was itself killed cannot, and a
    hostile file that hangs the loader would otherwise run on for ever. The forkserver exits when the last
    holder of its "alive" pipe is gone, and multiprocessing hands that pipe to every child too: this child
    starts no processes, so it lets go of it, or it would keep its own parent alive.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver  # no public way to reach the inherited descriptor
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0 and (
            parent == 1 or os.getppid() != parent
        ):
            os._exit(1)  # the parent went before the prctl: this child was handed to init
    except (OSError, AttributeError):  # not Linux: the server's own time limit still applies while it lives
        pass


def run(request: dict[str, Any], connection) -> None:
    """Child entry point: run ACTIONS[request["action"]](**request["args"]) and send back one result dict."""
    _die_with_parent()
    _limit_resources()
    try:
        result = {"ok": True, "result": ACTIONS[request["action"]](**request["args"])}
    except AdvauditError as error:
        result = {"ok": False, "kind": type(error).__name__, "error": str(error)}
    except MemoryError:
        result = {"ok": False, "kind": "crash", "error": "it needed more memory than a validation may use"}
    except Exception as error:  # a loader bug or a hostile file: either way the file is not accepted
        result = {"ok": False, "kind": "crash", "error": f"{type(error).__name__}: {error}"}
    connection.send(result)
    connection.close()
