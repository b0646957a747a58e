"""torch backend: torch.compile and the option checks on a CPU, and the CUDA path (events, pinned
copies, CUDA graph capture and its fallback, releasing per-shape state) against stand-ins for torch.cuda:
they show the wiring, not that a GPU accepts it."""

import contextlib

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.models.base import SegmentationModel

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache


class OneConv(SegmentationModel):
    def __init__(self, num_classes: int = 3):
        super().__init__(num_classes)
        self.conv = torch.nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, images):
        return self.conv(images)


def test_compiled_forward_matches_eager():
    torch.manual_seed(0)
    model = OneConv().eval()
    feeds = {"images": np.random.default_rng(0).normal(size=(2, 3, 16, 24)).astype(np.float32)}
    with TorchRunner(model, TorchConfig(), "fp32") as eager:
        expected = eager.infer(feeds)["logits"]
    with TorchRunner(model, TorchConfig(compile="default"), "fp32") as compiled:
        actual = compiled.infer(feeds)["logits"]
        assert compiled.describe()["compile"] == "default"
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("option", [{"cuda_graph": True}, {"pinned_memory": True}, {"cudnn_benchmark": True}])
def test_cuda_only_options_are_refused_on_the_cpu(option):
    with pytest.raises(ValidationError, match="need device: cuda"):
        TorchConfig(device="cpu", **option)
    assert TorchConfig(device="cuda", **option).variant() == option


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_is_refused_with_a_compile_mode_that_captures_graphs_itself(mode):
    with pytest.raises(ValidationError, match=f"cuda_graph: true with compile: {mode} captures CUDA graphs"):
        TorchConfig(device="cuda", cuda_graph=True, compile=mode)
    assert TorchConfig(device="cuda", cuda_graph=True, compile="default").compile == "default"
    assert TorchConfig(device="cuda", compile=mode).cuda_graph is False


def test_cudnn_benchmark_is_a_cuda_option_on_by_default_there():
    with pytest.raises(ValidationError, match="need device: cuda"):
        TorchConfig(device="cpu", cudnn_benchmark=True)
    assert TorchConfig(device="cuda").cudnn_benchmark is None  # None: on for cuda (see activate)
    assert TorchConfig(device="cuda", cudnn_benchmark=False).variant() == {"cudnn_benchmark": False}


# Stand-ins for torch.cuda: the runner's CUDA path runs on the CPU, with its calls recorded.


class FakeEvent:
    def __init__(self, log, **_):
        self.log = log

    def record(self, stream=None):
        self.log.append("record")

    def synchronize(self):
        self.log.append("synchronize")

    def elapsed_time(self, other):
        return 1.0


class FakeStream:
    def __init__(self, *_, **__):
        pass

    def wait_stream(self, other):
        pass


class FakeCudaGraph:
    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


class FakeCuda:
    """torch.cuda's members the runner uses; ``capturing`` is True inside torch.cuda.graph."""

    def __init__(self, monkeypatch):
        self.log, self.capturing, self.captures, self.graphs = [], False, 0, []
        self.empty_caches = 0
        fake = self

        @contextlib.contextmanager
        def graph(cuda_graph, *args, **kwargs):
            fake.captures += 1
            fake.capturing = True
            try:
                yield
            finally:
                fake.capturing = False

        def new_graph():
            fake.graphs.append(FakeCudaGraph())
            return fake.graphs[-1]

        for name, value in {
            "Event": lambda **kw: FakeEvent(fake.log, **kw),
            "Stream": FakeStream,
            "current_stream": lambda *a: FakeStream(),
            "stream": lambda s: contextlib.nullcontext(),
            "graph": graph,
            "CUDAGraph": new_graph,
            "synchronize": lambda *a: None,
            "empty_cache": lambda: setattr(fake, "empty_caches", fake.empty_caches + 1),
            "get_device_name": lambda *a: "Fake GPU",
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        # Page-locked memory needs a GPU: plain host memory stands in.
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())
        real_empty = torch.empty
        monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **kw: real_empty(*a, **kw))
        # The runner's "cuda" device is the CPU here.
        monkeypatch.setattr(TorchRunner, "device", property(lambda self: torch.device("cpu")))

    def __deepcopy__(self, memo):
        return self  # the runner deep-copies the model to the device: its stand-in stays shared


class SyncsOnData(OneConv):
    """As Mask R-CNN's nonzero: fine eagerly, refused while a CUDA graph is being captured."""

    def __init__(self, cuda):
        super().__init__()
        self.cuda = cuda

    def forward(self, images):
        if self.cuda.capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
        return self.conv(images)


def feeds_of(seed, shape=(2, 3, 8, 8)):
    return {"images": np.random.default_rng(seed).normal(size=shape).astype(np.float32)}


def test_cuda_path_times_each_copy_and_hands_out_copies_of_its_pinned_buffers(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    model = OneConv().eval()
    with TorchRunner(model, TorchConfig(device="cuda"), "fp32") as runner:
        first = runner.infer(feeds_of(0))["logits"]
        # The d2h event is recorded after the copies were queued, then waited on: record x4, synchronize.
        assert cuda.log == ["record"] * 4 + ["synchronize"]
        assert set(runner.last_stages_ms) == {"h2d", "compute", "d2h"}
        kept = first.copy()
        second = runner.infer(feeds_of(1))["logits"]
        info = runner.describe()
    # The pinned output buffer is reused: what the first call returned must not change with it.
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, second)
    with torch.inference_mode():
        expected = model(torch.from_numpy(feeds_of(1)["images"])).numpy()
    np.testing.assert_allclose(second, expected, atol=1e-6)
    assert info["pinned_memory"] is True and info["cudnn_benchmark"] is True and info["cuda_graph"] is False
    assert torch.backends.cudnn.benchmark is False  # restored on deactivate


def test_a_failed_capture_falls_back_to_eager_once_and_says_why(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    model = SyncsOnData(cuda).eval()
    with TorchRunner(model, TorchConfig(device="cuda", cuda_graph=True), "fp32") as runner:
        outputs = [runner.infer(feeds_of(seed, shape))["logits"] for seed, shape in
                   [(0, (2, 3, 8, 8)), (1, (2, 3, 8, 8)), (2, (1, 3, 16, 8))]]  # fmt: skip
        info = runner.describe()
    assert cuda.captures == 1  # not retried per call nor per shape
    assert info["cuda_graph"] == "fallback"
    assert info["cuda_graph_fallback"] == (
        "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    )
    with torch.inference_mode():
        expected = model.conv(torch.from_numpy(feeds_of(2, (1, 3, 16, 8))["images"])).numpy()
    np.testing.assert_allclose(outputs[-1], expected, atol=1e-6)


def test_out_of_memory_while_capturing_is_the_forwards_failure_not_a_fallback(monkeypatch):
    cuda = FakeCuda(monkeypatch)

    class OutOfMemoryWhenCapturing(OneConv):
        def forward(self, images):
            if cuda.capturing:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.conv(images)

    with TorchRunner(
        OutOfMemoryWhenCapturing(), TorchConfig(device="cuda", cuda_graph=True), "fp32"
    ) as runner:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            runner.infer(feeds_of(0))
        assert runner.describe()["cuda_graph"] is True


def test_graphs_are_kept_per_shape_and_released_on_request(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    with TorchRunner(OneConv().eval(), TorchConfig(device="cuda", cuda_graph=True), "fp32") as runner:
        for seed in range(3):
            runner.infer(feeds_of(seed))
        runner.infer(feeds_of(0, (4, 3, 8, 8)))
        assert cuda.captures == 2 and [g.replays for g in cuda.graphs] == [3, 1]
        assert len(runner._graphs) == 2 and runner._host_buffers and runner._pinned_buffers
        before = cuda.empty_caches
        runner.release_cached_shapes()
        assert not runner._graphs and not runner._host_buffers and not runner._pinned_buffers
        assert cuda.empty_caches == before + 1
        runner.infer(feeds_of(0))
        assert cuda.captures == 3  # captured afresh after the release
        assert runner.describe()["cuda_graph"] is True


def test_a_replays_compute_time_leaves_out_the_copy_into_the_graphs_static_input(monkeypatch):
    """The copy into the captured graph's static input is staging, as TensorRT's is: the compute event
    is recorded after it, right before the replay."""
    cuda = FakeCuda(monkeypatch)
    with TorchRunner(OneConv().eval(), TorchConfig(device="cuda", cuda_graph=True), "fp32") as runner:
        runner.infer(feeds_of(0))  # captures
        log = []

        class NamedEvent(FakeEvent):
            def __init__(self, name):
                super().__init__(log)
                self.name = name

            def record(self, stream=None):
                log.append(self.name)

        runner._events = [NamedEvent(n) for n in ("before_copy", "before_forward", "after_forward", "after")]
        static_inputs = [static for _, static, _ in runner._graphs.values()]
        real_copy = torch.Tensor.copy_

        def copy_(self, src, *args, **kwargs):
            if any(self is static for static in static_inputs):
                log.append("copy into the static input")
            return real_copy(self, src, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "copy_", copy_)
        monkeypatch.setattr(cuda.graphs[0], "replay", lambda: log.append("replay"))
        runner.infer(feeds_of(1))
    assert log == ["before_copy", "copy into the static input", "before_forward", "replay", "after_forward",
                   "after", "synchronize"]  # fmt: skip
