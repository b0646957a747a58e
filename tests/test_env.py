import re
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch

import segbench.env as env_module
from segbench.env import collect_env, env_fingerprint, environment_rows, format_cudnn

GIB = 2**30


def fake_nvml(*, failing=(), init_error=False, names=("NVIDIA H100 80GB HBM3",)):
    """A stand-in for nvidia-ml-py's ``pynvml``: the functions that raise are named in ``failing``."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    nvml.NVMLError = NVMLError
    nvml.NVML_CLOCK_SM = 1
    nvml.NVML_CLOCK_MEM = 2
    nvml.shutdowns = 0
    clocks = {1: 1755, 2: 2619}
    max_clocks = {1: 1980, 2: 2619}

    def query(name, answer):
        def call(*args):
            if name in failing:
                raise NVMLError(f"{name}: Not Supported")
            return answer(*args)

        setattr(nvml, name, call)

    def init():
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def shutdown():
        nvml.shutdowns += 1

    nvml.nvmlInit = init
    nvml.nvmlShutdown = shutdown
    query("nvmlSystemGetDriverVersion", lambda: "580.65.06")
    query("nvmlSystemGetCudaDriverVersion", lambda: 13000)
    query("nvmlDeviceGetCount", lambda: len(names))
    query("nvmlDeviceGetHandleByIndex", lambda index: index)
    query("nvmlDeviceGetName", lambda handle: names[handle])
    query("nvmlDeviceGetMemoryInfo", lambda handle: SimpleNamespace(total=80 * GIB, used=GIB, free=79 * GIB))
    query("nvmlDeviceGetClockInfo", lambda handle, clock: clocks[clock])
    query("nvmlDeviceGetMaxClockInfo", lambda handle, clock: max_clocks[clock])
    query("nvmlDeviceGetPowerManagementLimit", lambda handle: 700000)
    return nvml


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)


@pytest.fixture
def torch_gpu(monkeypatch):
    """torch reports one H100, as on a GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * GIB))


def test_collect_env_without_nvml(no_nvml):
    env = collect_env()
    assert env["cpu"] and env["cpu_count"] >= 1
    assert env["cpu_cores_logical"] >= 1
    assert env["cpu_cores_physical"] is None or env["cpu_cores_physical"] >= 1
    assert 1 <= env["cpu_cores_usable"] <= env["cpu_cores_logical"]
    assert env["ram_mb"] > 0
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"segbench", "torch", "onnxruntime"} <= set(env["packages"])
    assert env["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_sha"])
    assert env["git_dirty"] in (None, True, False)
    assert env["cuda"] == torch.version.cuda
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["nvml"].startswith("unavailable: nvidia-ml-py is not installed")
    assert env["driver"] is None and env["cuda_driver"] is None and env["nvml_gpus"] == []
    assert re.fullmatch(r"[0-9a-f]{12}", env["fingerprint"])
    assert env["fingerprint"] == env_fingerprint(env)


def test_collect_env_with_nvml_records_driver_clocks_and_gpus(monkeypatch, torch_gpu):
    nvml = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    env = collect_env()
    assert env["nvml"] == "ok"
    assert env["driver"] == "580.65.06"
    assert env["cuda_driver"] == "13.0"
    assert env["cuda_available"] is True
    assert env["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_mb": 81920}]
    assert env["nvml_gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_mb": 81920,
            "sm_clock_mhz": 1755,
            "mem_clock_mhz": 2619,
            "sm_clock_max_mhz": 1980,
            "mem_clock_max_mhz": 2619,
            "power_limit_w": 700.0,
        }
    ]
    assert nvml.shutdowns == 1
    # The GPU and driver are identity fields: the fingerprint differs from the same machine without them.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert collect_env()["fingerprint"] != env["fingerprint"]


def test_nvml_error_in_one_query_leaves_only_that_field_out(monkeypatch):
    nvml = fake_nvml(failing={"nvmlDeviceGetMaxClockInfo", "nvmlSystemGetDriverVersion"})
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    env = collect_env()
    assert env["driver"] is None
    assert env["cuda_driver"] == "13.0"
    (gpu,) = env["nvml_gpus"]
    assert "sm_clock_max_mhz" not in gpu and "mem_clock_max_mhz" not in gpu
    assert gpu["sm_clock_mhz"] == 1755 and gpu["mem_clock_mhz"] == 2619
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["power_limit_w"] == 700.0
    assert nvml.shutdowns == 1


def test_nvml_failing_to_initialise_is_recorded_not_raised(monkeypatch):
    nvml = fake_nvml(init_error=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    env = collect_env()
    assert env["nvml"] == "unavailable: nvmlInit failed: Driver Not Loaded"
    assert env["driver"] is None and env["nvml_gpus"] == []
    assert nvml.shutdowns == 0


def test_tensorrt_version_when_importable(monkeypatch, no_nvml):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.13.0.35"))
    assert collect_env()["tensorrt"] == "10.13.0.35"
    real_import = env_module.importlib.import_module

    def import_module(name):
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file")
        return real_import(name)

    monkeypatch.setattr(env_module.importlib, "import_module", import_module)
    assert collect_env()["tensorrt"] is None


def test_git_sha_and_dirty_flag(monkeypatch):
    calls = []

    def run(args, **kwargs):
        calls.append((args, kwargs))
        out = "ab" * 20 + "\n" if "rev-parse" in args else " M segbench/env.py\n"
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(env_module.subprocess, "run", run)
    assert env_module._git_sha() == "ab" * 20
    assert env_module._git_dirty() is True
    for args, kwargs in calls:
        assert isinstance(args, list) and args[0] == "git" and kwargs["timeout"] > 0
        assert not kwargs.get("shell")

    def clean(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout="", stderr="")

    monkeypatch.setattr(env_module.subprocess, "run", clean)
    assert env_module._git_dirty() is False

    def hangs(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(env_module.subprocess, "run", hangs)
    assert env_module._git_sha() is None and env_module._git_dirty() is None


def base_env():
    return {
        "cpu": "AMD EPYC 9654",
        "cpu_count": 16,
        "cpu_cores_logical": 16,
        "cuda": "13.0",
        "cudnn": 92400,
        "tensorrt": "10.13.0.35",
        "driver": "580.65.06",
        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_mb": 81920}],
        "nvml_gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "sm_clock_mhz": 1755}],
        "packages": {"segbench": "0.1.0", "torch": "2.14.1", "onnxruntime-gpu": "1.23.0", "numpy": "2.4.6"},
        "git_sha": "a" * 40,
        "config_hash": "d802d4eff1df2dca",
    }


def test_fingerprint_is_stable_under_key_order_and_ignores_clocks_and_config():
    env = base_env()
    reference = env_fingerprint(env)
    assert re.fullmatch(r"[0-9a-f]{12}", reference)
    reordered = dict(reversed(list(env.items())))
    reordered["packages"] = dict(reversed(list(env["packages"].items())))
    assert env_fingerprint(reordered) == reference
    varied = base_env()
    varied["nvml_gpus"][0].update(sm_clock_mhz=1200, power_limit_w=350.0)
    varied["config_hash"] = "0123456789abcdef"
    varied["config_name"] = "other"
    varied["packages"]["numpy"] = "1.26.4"
    varied["git_dirty"] = True
    varied["fingerprint"] = "stale"
    assert env_fingerprint(varied) == reference


@pytest.mark.parametrize(
    "change",
    [
        lambda env: env["gpus"][0].update(name="NVIDIA H200"),
        lambda env: env.update(driver="575.51.03"),
        lambda env: env["packages"].update(torch="2.9.0"),
        lambda env: env.update(git_sha="b" * 40),
        lambda env: env.update(cudnn=91000),
        lambda env: env.update(tensorrt="10.9.0.34"),
        lambda env: env.update(cpu="Intel Xeon Platinum 8480+"),
    ],
    ids=["gpu", "driver", "torch", "git_sha", "cudnn", "tensorrt", "cpu"],
)
def test_fingerprint_changes_with_identity_fields(change):
    env = base_env()
    reference = env_fingerprint(env)
    change(env)
    assert env_fingerprint(env) != reference


def test_fingerprint_uses_nvml_gpu_names_when_torch_sees_none():
    env = base_env()
    env["gpus"] = []
    other = base_env()
    other["gpus"] = []
    other["nvml_gpus"][0]["name"] = "NVIDIA L4"
    assert env_fingerprint(env) != env_fingerprint(other)
    assert env_fingerprint(env) == env_fingerprint(base_env())


def test_environment_rows_are_strings(monkeypatch, torch_gpu):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(failing={"nvmlDeviceGetPowerManagementLimit"}))
    env = collect_env()
    env.update(config_name="default", config_hash="d802d4eff1df2dca", skipped_backends=[])
    rows = environment_rows(env)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in rows)
    table = dict(rows)
    assert len(table) == len(rows)
    assert table["fingerprint"] == env["fingerprint"]
    assert table["nvidia driver"] == "580.65.06"
    assert table["gpu 0"] == "NVIDIA H100 80GB HBM3, sm 9.0, 80.0 GiB"
    assert table["nvml gpu 0 sm clock (now / max)"] == "1755 / 1980 MHz"
    assert table["nvml gpu 0 power limit"] == "-"
    assert table["package torch"] == env["packages"]["torch"]
    assert table["config hash"] == "d802d4eff1df2dca"


def test_environment_rows_of_an_older_env_json():
    old = {"python": "3.11.7", "cpu": "AMD EPYC", "cpu_count": 2, "packages": {"torch": "2.14.1"}}
    table = dict(environment_rows(old))
    assert all(isinstance(value, str) for value in table.values())
    assert table["cpu cores"] == "2 logical, - physical, - usable"
    assert table["nvidia driver"] == "-" and table["cudnn"] == "-"
    assert table["fingerprint"] == env_fingerprint(old)


def test_format_cudnn():
    assert format_cudnn(92400) == "9.24.0"
    assert format_cudnn(90100) == "9.1.0"
    assert format_cudnn(8907) == "8.9.7"
    assert format_cudnn(None) == "-"
