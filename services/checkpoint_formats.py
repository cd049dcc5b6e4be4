"""Recognise a checkpoint file by its content and read it without ever unpickling arbitrary objects."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import safetensors.torch
import torch
from torch import nn
from torch.export.passes import move_to_device_pass  # a submodule torch.export does not always import

from services.errors import CheckpointError

SUPPORTED_FORMATS = (
    "a torch.export archive (.pt2, torch.export.save), a TorchScript file (torch.jit.save), "
    "or weights: a .safetensors file or a state_dict saved with torch.save(model.state_dict(), ...) plus --arch"
)
TORCH_EXPORT, TORCHSCRIPT, SAFETENSORS, STATE_DICT = (
    "torch.export",
    "torchscript",
    "safetensors",
    "state_dict",
)
_LEGACY_PICKLE = "pickle"  # not a zip: an old-style torch.save file or a bare pickle
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_KEY_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile
# Top-level entries a plain torch.export.save archive holds; anything else (AOTInductor shared libraries,
# ExecuTorch payloads, legacy pickled weights) could run native or Python code, so it is refused.
_PT2_FILES = {
    "archive_format",
    "archive_version",
    "byteorder",
    "version",
    ".data/version",
    ".data/serialization_id",
}
_PT2_DIRS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")


def pickle_refusal(path: Path) -> CheckpointError:
    """The error for a file that would need Python unpickling to load."""
    return CheckpointError(
        f"{path} contains pickled Python objects (a torch.save'd model object, a training checkpoint with "
        "extra Python objects, or an arbitrary pickle); loading it could run code, so it is refused. "
        "advaudit only loads weights (state_dict/safetensors), TorchScript or torch.export archives: save "
        "torch.save(model.state_dict(), 'model.pt') and pass --arch, or use torch.export.save / torch.jit.save."
    )


_SUFFIX_HINTS = {
    ".pt2": "a torch.export archive",
    ".safetensors": "a safetensors file",
    ".ts": "a TorchScript file",
    ".torchscript": "a TorchScript file",
    ".pt": "a TorchScript file or a torch.save state_dict",
    ".pth": "a TorchScript file or a torch.save state_dict",
}


def unrecognised(path: Path, why: str) -> CheckpointError:
    """The error for a file that is damaged or in no supported format; the extension says what was expected."""
    hint = _SUFFIX_HINTS.get(path.suffix.lower())
    expected = f" (its {path.suffix} extension suggests {hint})" if hint else ""
    return CheckpointError(f"cannot load {path}{expected}: {why}. Supported formats: {SUPPORTED_FORMATS}.")


def detect_format(path: Path) -> str:
    """Which loader a file needs, decided by its bytes (the extension is only a hint)."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if not head:
        raise unrecognised(path, "the file is empty")
    if head.startswith(b"PK"):
        return _zip_format(path)
    if _looks_like_safetensors(head, path.stat().st_size):
        return SAFETENSORS
    if head[0] == 0x80:  # pickle protocol ≥ 2 opcode: an old-style torch.save or a bare pickle
        return _LEGACY_PICKLE
    raise unrecognised(path, "the content is not a format advaudit recognises")


def _zip_format(path: Path) -> str:
    names = _relative_names(path)
    if "archive_format" in names:
        return TORCH_EXPORT
    if "constants.pkl" in names or any(name.startswith("code/") for name in names):
        return TORCHSCRIPT
    if "data.pkl" in names:
        return STATE_DICT
    raise unrecognised(
        path, "it is a zip file but not one written by torch.save, torch.jit.save or torch.export"
    )


def _relative_names(path: Path) -> set[str]:
    """Entry names below the archive's root folder (torch archives put everything under one folder)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise unrecognised(path, f"the zip archive is truncated or corrupt ({exc})") from None
    if not names:
        raise unrecognised(path, "the zip archive is empty")
    root = names[0].split("/", 1)[0] + "/"
    if any(not name.startswith(root) for name in names):
        raise unrecognised(path, "the zip archive does not have the single root folder torch archives use")
    return {name[len(root) :] for name in names}


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return 2 <= header_length <= size - 8 and head[8:9] == b"{"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only torch.save file, unwrapped and un-prefixed."""
    kind = detect_format(path)
    raw: object
    if kind == SAFETENSORS:
        try:
            raw = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for a bad header or payload
            raise unrecognised(path, f"the safetensors file is corrupt ({exc})") from None
    elif kind in (STATE_DICT, _LEGACY_PICKLE):
        raw = _torch_load_weights(path, kind)
    else:
        raise CheckpointError(f"{path} is a {kind} file, not a weights file (state_dict or safetensors)")
    return _normalise_state_dict(path, raw)


def _torch_load_weights(path: Path, kind: str) -> object:
    try:
        with path.open(
            "rb"
        ) as handle:  # a handle, not the path: torch.load picks a loader by the .safetensors suffix
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses every pickle global outside torch's tensor allowlist before calling it
        if kind == _LEGACY_PICKLE or "Weights only load failed" in str(exc):
            raise pickle_refusal(path) from None
        raise unrecognised(
            path, f"torch.load failed, the file is probably truncated or corrupt ({exc})"
        ) from None


def _normalise_state_dict(path: Path, raw: object) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"{path} does not hold a state_dict (a non-empty dict of parameter name → tensor); "
            "save it with torch.save(model.state_dict(), path)"
        )
    not_tensors = [str(key) for key, value in raw.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a plain state_dict: entries {', '.join(not_tensors[:5])} are not tensors; "
            "save only model.state_dict()"
        )
    state = {str(key): value for key, value in raw.items()}
    for prefix in _KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """A TorchScript module; its unpickler only rebuilds TorchScript types, never Python globals."""
    try:
        with warnings.catch_warnings():
            # torch marks TorchScript deprecated; loading it is still exactly what the user asked for.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            # torch.jit.load has no annotations (an untyped call in strict mode).
            load = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
            module: torch.jit.ScriptModule = load
            return module
    except Exception as exc:
        raise unrecognised(path, f"the TorchScript archive cannot be loaded ({exc})") from None


def load_exported(path: Path, device: torch.device) -> torch.export.ExportedProgram:
    """A torch.export program, after checking the archive holds no pickled objects or native code."""
    _check_pt2_entries(path)
    try:
        with _weights_only_everywhere(), path.open("rb") as handle:
            program = torch.export.load(handle)
    except Exception as exc:
        if "Weights only load failed" in str(exc):
            raise pickle_refusal(path) from None
        raise unrecognised(path, f"the torch.export archive cannot be loaded ({exc})") from None
    if device.type != "cpu":
        program = move_to_device_pass(program, device)
    return program


def _check_pt2_entries(path: Path) -> None:
    # torch.export.load unpickles "use_pickle" weights, opaque constants and sample inputs with
    # weights_only=False, and loads AOTInductor shared libraries: refuse such archives up front.
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0] + "/"
        entries = {name[len(root) :]: name for name in archive.namelist()}
        for name in entries:
            if name.endswith("/") or name in _PT2_FILES:
                continue
            allowed_dir = name.startswith(_PT2_DIRS) and not name.endswith((".so", ".dll", ".dylib"))
            legacy_pickle = name.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt")
            if not allowed_dir or legacy_pickle:
                raise CheckpointError(
                    f"{path} is a torch.export archive with an entry advaudit does not load ({name}): "
                    "only plain torch.export.save archives are supported, without AOTInductor or "
                    "pickled payloads; re-save the ExportedProgram with torch.export.save"
                )
        for name, full_name in entries.items():
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                _check_payload_config(path, archive.read(full_name))
            elif name.startswith("data/sample_inputs/"):
                _check_weights_only(path, archive.read(full_name))


def _check_payload_config(path: Path, data: bytes) -> None:
    try:
        config = json.loads(data)["config"]
        pickled = [
            key
            for key, meta in config.items()
            if meta["use_pickle"] or not meta["path_name"].startswith(("weight_", "tensor_"))
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise unrecognised(path, "the torch.export archive has an unreadable payload configuration") from None
    if pickled:
        raise pickle_refusal(path)


def _check_weights_only(path: Path, data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise pickle_refusal(path) from None


_ENV_LOCK = threading.Lock()


@contextmanager
def _weights_only_everywhere() -> Iterator[None]:
    """Force weights_only=True on every torch.load, even those that pass weights_only=False explicitly."""
    # Second line of defence for torch.export.load's internal torch.load(weights_only=False) calls;
    # torch reads these variables at each torch.load call.
    with _ENV_LOCK:
        saved = {
            name: os.environ.pop(name, None)
            for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
        }
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value


def exported_network(program: torch.export.ExportedProgram, path: Path) -> nn.Module:
    """The unflattened module tree of an exported program, after checking its batch dimension is dynamic."""
    inputs = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(inputs) != 1:
        raise CheckpointError(
            f"{path}: the exported program takes {len(inputs)} inputs; advaudit calls model(x) with one image batch"
        )
    batch = inputs[0].meta["val"].shape[0]
    limits = program.range_constraints.get(batch.node.expr) if isinstance(batch, torch.SymInt) else None
    if not isinstance(batch, torch.SymInt) or (limits is not None and limits.lower > 1):
        raise CheckpointError(
            f"{path} was exported with a fixed batch size ({batch}), so it cannot run advaudit's batches; "
            "re-export with a dynamic batch dimension: torch.export.export(model, (x,), "
            'dynamic_shapes=({0: torch.export.Dim("batch")},))'
        )
    try:
        return torch.export.unflatten(program)
    except Exception as exc:
        raise unrecognised(path, f"the exported program cannot be unflattened into modules ({exc})") from None


class ExportedGraph(nn.Module):
    """torch.export's flat graph module, run as is: its train/eval behaviour was fixed when it was exported.

    The graph module itself refuses .train()/.eval(); this wrapper takes the call (as flags only), so the
    engine can treat it like any other module.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> ExportedGraph:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.graph(x)
        return logits


def exported_module(program: torch.export.ExportedProgram, named: nn.Module, path: Path) -> nn.Module:
    """The program as one flat graph module (as fast as eager), with `named` re-pointed at its weights.

    The unflattened view copies the weights it is built from; pointing its parameters and buffers at the flat
    module's (which are the program's own) keeps a single copy of the weights in memory.
    """
    try:
        fast = program.module()
    except Exception as exc:
        raise unrecognised(path, f"the exported program cannot be turned into a module ({exc})") from None
    shared = dict(fast.named_parameters(remove_duplicate=False)) | dict(
        fast.named_buffers(remove_duplicate=False)
    )
    for name, _ in [
        *named.named_parameters(remove_duplicate=False),
        *named.named_buffers(remove_duplicate=False),
    ]:
        if name in shared:
            owner, _, attr = name.rpartition(".")
            holder = named.get_submodule(owner) if owner else named
            # torch types _parameters as Parameter-valued; the flat module's tensor is shared as it is.
            store = (
                cast("dict[str, torch.Tensor | None]", holder._parameters)
                if attr in holder._parameters
                else holder._buffers
            )
            store[attr] = shared[name]
    return ExportedGraph(fast)
