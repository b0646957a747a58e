"""A fingerprint of the machine and software a run used, written to env.json with every run.

``collect_env()`` gathers what is readable on this machine and never fails for lack of a GPU, of NVML
(nvidia-ml-py, the ``[gpu]`` extra) or of TensorRT: what cannot be read is None, or left out of a per-GPU
entry. ``env_fingerprint()`` hashes the identity fields that decide whether two runs' numbers can be
compared (hardware, driver, CUDA stack, backend versions, git revision), and ``environment_rows()`` turns an
environment into (key, value) strings for a table.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import subprocess
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

PACKAGES = (
    "segbench",
    "torch",
    "torchvision",
    "transformers",
    "onnx",
    "onnxscript",
    "onnxslim",
    "onnxconverter-common",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "tensorrt-cu13",
    "numpy",
    "nvidia-ml-py",
)

# Package versions that change the numbers a run produces; the others (numpy, onnxslim, ...) are recorded
# in env.json but left out of the fingerprint.
FINGERPRINT_PACKAGES = ("segbench", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu13")

FINGERPRINT_LENGTH = 12

_GIT_TIMEOUT_S = 5


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int | None:
    """CPUs this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git_sha() -> str | None:
    result = _git("rev-parse", "HEAD")
    if result is None or result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _git_dirty() -> bool | None:
    """True when the work tree has uncommitted changes (untracked files included); None outside git."""
    result = _git("status", "--porcelain")
    if result is None or result.returncode != 0:
        return None
    return bool(result.stdout.strip())


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _tensorrt_version() -> str | None:
    """The importable ``tensorrt`` module's version (its wheel can be present while its libraries are not)."""
    try:
        module = importlib.import_module("tensorrt")
    except (ImportError, OSError):
        return None
    version = getattr(module, "__version__", None)
    return str(version) if version is not None else None


def _onnxruntime_providers() -> list[str] | None:
    try:
        module = importlib.import_module("onnxruntime")
    except (ImportError, OSError):
        return None
    try:
        return list(module.get_available_providers())
    except Exception:
        return None


# torch is imported where facts are collected, not at import: reading a run's env.json (reports,
# compare) must not pay for it.


def _cudnn_version() -> int | None:
    import torch

    try:
        return torch.backends.cudnn.version()
    except Exception:
        return None


def _torch_gpus() -> list[dict[str, Any]]:
    """The CUDA devices torch sees, in torch's order (CUDA_VISIBLE_DEVICES applies)."""
    import torch

    if not torch.cuda.is_available():
        return []
    try:
        return [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                "memory_mb": torch.cuda.get_device_properties(i).total_memory // 2**20,
            }
            for i in range(torch.cuda.device_count())
        ]
    except (RuntimeError, AssertionError):
        return []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_reader(nvml: Any) -> Callable[..., Any]:
    """A caller for NVML functions that answers None instead of raising when a query is not supported."""

    def read(function: str, *args: Any) -> Any:
        try:
            return getattr(nvml, function)(*args)
        except (nvml.NVMLError, AttributeError):
            return None

    return read


def _nvml_gpu(nvml: Any, read: Callable[..., Any], index: int) -> dict[str, Any]:
    """One GPU as NVML sees it; a field whose query fails is left out."""
    gpu: dict[str, Any] = {"index": index}
    handle = read("nvmlDeviceGetHandleByIndex", index)
    if handle is None:
        return gpu
    name = read("nvmlDeviceGetName", handle)
    if name is not None:
        gpu["name"] = _text(name)
    memory = read("nvmlDeviceGetMemoryInfo", handle)
    if memory is not None:
        gpu["memory_mb"] = int(memory.total) // 2**20
    clocks = {
        "sm_clock_mhz": ("nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
        "mem_clock_mhz": ("nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),
        "sm_clock_max_mhz": ("nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),
        "mem_clock_max_mhz": ("nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_MEM"),
    }
    for key, (function, clock) in clocks.items():
        clock_id = getattr(nvml, clock, None)
        value = read(function, handle, clock_id) if clock_id is not None else None
        if value is not None:
            gpu[key] = int(value)
    power_mw = read("nvmlDeviceGetPowerManagementLimit", handle)
    if power_mw is not None:
        gpu["power_limit_w"] = round(power_mw / 1000, 1)
    return gpu


def _nvml_facts() -> dict[str, Any]:
    """Driver, the CUDA version the driver supports, and every GPU on the machine with clocks, via NVML.

    NVML numbers GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES, so these entries are kept apart from
    torch's ``gpus`` rather than matched by index.
    """
    facts: dict[str, Any] = {"nvml": None, "driver": None, "cuda_driver": None, "nvml_gpus": []}
    try:
        nvml = importlib.import_module("pynvml")
    except (ImportError, OSError):
        facts["nvml"] = "unavailable: nvidia-ml-py is not installed (pip install 'segbench[gpu]')"
        return facts
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError (no driver, no library) or a broken install
        facts["nvml"] = f"unavailable: nvmlInit failed: {exc}"
        return facts
    try:
        read = _nvml_reader(nvml)
        facts["nvml"] = "ok"
        driver = read("nvmlSystemGetDriverVersion")
        facts["driver"] = _text(driver) if driver is not None else None
        cuda_driver = read("nvmlSystemGetCudaDriverVersion")
        if isinstance(cuda_driver, int) and cuda_driver > 0:
            facts["cuda_driver"] = f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}"
        count = read("nvmlDeviceGetCount") or 0
        facts["nvml_gpus"] = [_nvml_gpu(nvml, read, index) for index in range(int(count))]
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return facts


def collect_env() -> dict[str, Any]:
    """Versions, CPU and GPU facts, the git revision of segbench, and the environment fingerprint."""
    import torch

    memory = psutil.virtual_memory()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_usable": _usable_cores(),
        "ram_mb": memory.total // 2**20,
        "torch_threads": torch.get_num_threads(),
        "packages": _package_versions(),
        "tensorrt": _tensorrt_version(),
        "onnxruntime_providers": _onnxruntime_providers(),
        "git_sha": _git_sha(),
        "git_dirty": _git_dirty(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "gpus": _torch_gpus(),
    }
    env.update(_nvml_facts())
    env["fingerprint"] = env_fingerprint(env)
    return env


def gpu_names(env: Mapping[str, Any]) -> list[str] | None:
    """The GPUs the run could use: torch's view, else NVML's (a CPU build of torch with onnxruntime-gpu);
    [] when the run knew it had none, None when an older env.json did not record it."""
    for key in ("gpus", "nvml_gpus"):
        names = [str(g["name"]) for g in env.get(key) or () if isinstance(g, Mapping) and g.get("name")]
        if names:
            return names
    if "gpus" in env or env.get("cuda_available") is False:
        return []
    return None


def machine_identity(env: Mapping[str, Any]) -> dict[str, Any]:
    """The hardware a run's timings belong to: CPU model and core counts, GPU models, driver and power
    limits. Two runs whose identities differ ran on different machines (or one reconfigured), so their
    latencies are not compared; software versions are not in it (that is what an A/B compares)."""
    power = [g.get("power_limit_w") for g in env.get("nvml_gpus") or () if isinstance(g, Mapping)]
    return {
        "cpu": env.get("cpu"),
        "cpu cores": env.get("cpu_cores_logical", env.get("cpu_count")),
        "usable cores": env.get("cpu_cores_usable"),
        "gpus": ", ".join(gpu_names(env) or []) or None,
        "driver": env.get("driver"),
        "power limits (W)": ", ".join(map(str, power)) if any(p is not None for p in power) else None,
    }


def fingerprint_fields(env: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields the fingerprint hashes: not clocks or power limits, nor the config hash."""
    packages = env.get("packages") or {}
    return {
        "cpu": env.get("cpu"),
        "cpu_cores_logical": env.get("cpu_cores_logical", env.get("cpu_count")),
        "gpus": gpu_names(env) or [],
        "driver": env.get("driver"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "tensorrt": env.get("tensorrt"),
        "packages": {name: packages.get(name) for name in FINGERPRINT_PACKAGES},
        "git_sha": env.get("git_sha"),
    }


def env_fingerprint(env: Mapping[str, Any]) -> str:
    """A short stable hash of the fields that make two runs' numbers comparable.

    Runs with equal fingerprints ran on the same CPU and GPU model with the same driver, CUDA, cuDNN,
    TensorRT, torch, onnxruntime and segbench revision; a different fingerprint flags a comparison across
    machines or versions. Key order does not matter; fields missing from ``env`` (an older env.json) hash
    as null.
    """
    canonical = json.dumps(fingerprint_fields(env), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def format_cudnn(version: Any) -> str:
    """torch reports cuDNN as one integer: 90100 is 9.1.0 (cuDNN 9+), 8907 is 8.9.7 (cuDNN 8)."""
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        return _show(version)
    major_unit = 10000 if version >= 90000 else 1000
    major, rest = divmod(version, major_unit)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _show(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_show(item) for item in value)
    return str(value)


def _clock_pair(gpu: Mapping[str, Any], current: str, maximum: str) -> str:
    now, top = gpu.get(current), gpu.get(maximum)
    if now is None and top is None:
        return "-"
    return f"{_show(now)} / {_show(top)} MHz"


def environment_rows(env: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value) pairs, both strings, for a table of ``env`` (as collect_env or env.json has it)."""
    cores = (
        f"{_show(env.get('cpu_cores_logical', env.get('cpu_count')))} logical, "
        f"{_show(env.get('cpu_cores_physical'))} physical, {_show(env.get('cpu_cores_usable'))} usable"
    )
    ram = env.get("ram_mb")
    git = _show(env.get("git_sha"))
    if env.get("git_dirty"):
        git += " (uncommitted changes)"
    rows: list[tuple[str, str]] = [
        ("fingerprint", _show(env.get("fingerprint") or env_fingerprint(env))),
        ("python", _show(env.get("python"))),
        ("platform", _show(env.get("platform"))),
        ("cpu", _show(env.get("cpu"))),
        ("cpu cores", cores),
        ("ram", f"{ram / 1024:.1f} GiB" if isinstance(ram, int | float) else "-"),
        ("torch threads", _show(env.get("torch_threads"))),
        ("git sha", git),
        ("cuda available", _show(env.get("cuda_available"))),
        ("cuda (torch build)", _show(env.get("cuda"))),
        ("cudnn", format_cudnn(env.get("cudnn"))),
        ("nvidia driver", _show(env.get("driver"))),
        ("cuda (driver supports)", _show(env.get("cuda_driver"))),
        ("tensorrt", _show(env.get("tensorrt"))),
        ("onnxruntime providers", _show(env.get("onnxruntime_providers"))),
    ]
    for i, gpu in enumerate(env.get("gpus") or ()):
        memory = gpu.get("memory_mb")
        memory_text = f"{memory / 1024:.1f} GiB" if isinstance(memory, int | float) else "-"
        rows.append(
            (f"gpu {i}", f"{_show(gpu.get('name'))}, sm {_show(gpu.get('capability'))}, {memory_text}")
        )
    for gpu in env.get("nvml_gpus") or ():
        index = gpu.get("index")
        power = gpu.get("power_limit_w")
        rows += [
            (f"nvml gpu {index}", _show(gpu.get("name"))),
            (f"nvml gpu {index} sm clock (now / max)", _clock_pair(gpu, "sm_clock_mhz", "sm_clock_max_mhz")),
            (
                f"nvml gpu {index} memory clock (now / max)",
                _clock_pair(gpu, "mem_clock_mhz", "mem_clock_max_mhz"),
            ),
            (f"nvml gpu {index} power limit", f"{power} W" if power is not None else "-"),
        ]
    if env.get("nvml") not in (None, "ok"):
        rows.append(("nvml", _show(env.get("nvml"))))
    rows += [(f"package {name}", _show(version)) for name, version in (env.get("packages") or {}).items()]
    for key in ("config_name", "config_hash"):
        if key in env:
            rows.append((key.replace("_", " "), _show(env[key])))
    return rows
