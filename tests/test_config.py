import pytest

from segbench.config import load_config, validate_config
from segbench.errors import ConfigError
from segbench.sweep import parse_size

BASE = {"models": [{"name": "unet", "options": {"base_channels": 4}}], "backends": [{"name": "torch"}]}


def config(**changes):
    return validate_config({**BASE, **changes}, "b.yaml")


def test_the_default_benchmark_yaml_is_valid():
    # Validation reads the packaged checkpoints too, so this also proves they exist and fit their models.
    cfg = load_config("benchmark.yaml")
    assert {m.name for m in cfg.models} == {"fcn32s", "fcn16s", "fcn8s", "unet", "mask_rcnn", "mask2former"}
    assert {(b.name, b.device) for b in cfg.backends} >= {("torch", "cpu"), ("onnxruntime", "cpu")}


def test_defaults():
    cfg = config()
    assert cfg.sweep.input_sizes == [(256, 256)] and cfg.sweep.batch_sizes == [1]
    assert cfg.numerics.tolerances("fp32")["miou"] == 0.5
    assert cfg.numerics.tolerances("fp32")["bbox_ap"] == 0.2
    assert cfg.numerics.tolerances("fp32")["segm_ap"] == 1.0
    assert cfg.numerics.tolerances("fp32")["pq"] == 0.5


def test_tolerances_as_one_number_or_per_metric():
    cfg = config(numerics={"tolerance": {"fp32": 0.1, "fp16": {"miou": 2.0}}})
    assert set(cfg.numerics.tolerances("fp32").values()) == {0.1}
    fp16 = cfg.numerics.tolerances("fp16")
    assert fp16["miou"] == 2.0 and fp16["pixel_accuracy"] == 1.0  # the rest keep their defaults
    assert cfg.backends[0].precisions == ["fp32"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", (512, 512)),
        ("512x1024", (512, 1024)),
        (" 64 x 32 ", (64, 32)),
        (128, (128, 128)),
        ([3, 4], (3, 4)),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["0x5", "-3", "abc", "5x", [1, 2, 3], True, 1.5])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_sweep_precedence_backend_then_model_then_top_level():
    cfg = config(
        models=[{"name": "unet", "options": {"base_channels": 4}, "sweep": {"input_sizes": ["64x64"]}}],
        backends=[{"name": "torch"}, {"name": "torch", "sweep": {"batch_sizes": [8]}}],
        sweep={"input_sizes": ["32x32"], "batch_sizes": [2]},
    )
    model = cfg.models[0]
    assert cfg.sweep_for(model, cfg.backends[0]).input_sizes == [(64, 64)]
    assert cfg.sweep_for(model, cfg.backends[1]).batch_sizes == [8]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": 1}, "b.yaml: colour: unknown key"),
        ({"backends": [{"name": "tensorflow"}]}, "unknown backend 'tensorflow'; valid: torch, onnxruntime"),
        (
            {"models": [{"name": "deeplab"}]},
            "unknown model 'deeplab'; valid models: fcn32s, fcn16s, fcn8s, unet",
        ),
        ({"models": [{"name": "unet", "options": {"depth": 5}}]}, "unknown option(s) depth for model unet"),
        ({"sweep": {"input_sizes": ["0x256"]}}, "sweep.input_sizes: input size must be positive, got 0x256"),
        ({"sweep": {"batch_sizes": [4, -1]}}, "sweep.batch_sizes: batch sizes must be positive, got -1"),
        (
            {"backends": [{"name": "torch", "precisions": ["fp16"]}]},
            "torch on cpu does not support precision fp16",
        ),
        ({"backends": [{"name": "onnxruntime", "provider": "x"}]}, "backends[0].provider: unknown key"),
        ({"timing": {"iterations": 0}}, "timing.iterations: Input should be greater than or equal to 1"),
        ({"numerics": {"dataset": {"kind": "voc"}}}, "unknown kind 'voc'; valid: shapes, folder"),
        ({"models": [{"name": "unet", "weights": "/no/such.pt"}]}, "weights file not found: /no/such.pt"),
        ({"models": []}, "models: List should have at least 1 item"),
        (
            {"numerics": {"tolerance": {"fp32": {"iou": 1}}}},
            "unknown metric 'iou' for fp32; valid metrics: miou",
        ),
        ({"numerics": {"tolerance": {"fp16": -1}}}, "tolerance for fp16 all metrics must be >= 0"),
        (
            {
                "models": [{"name": "mask2former"}],
                "numerics": {"dataset": {"kind": "folder", "images": "i", "masks": "m", "num_classes": 6}},
            },
            "mask2former is a panoptic model, but a folder dataset has semantic labels only",
        ),
    ],
)
def test_bad_config_gives_one_line_naming_the_problem(changes, message):
    with pytest.raises(ConfigError) as info:
        config(**changes)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_unreadable_weights_are_rejected_up_front(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ConfigError, match=r"cannot read weights file .*bad\.safetensors"):
        config(models=[{"name": "unet", "weights": str(bad)}])


def test_malformed_yaml(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("models: [unet\nbackends: {")
    with pytest.raises(ConfigError, match=r"b\.yaml: malformed YAML at line \d+, column \d+"):
        load_config(path)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_backend_artifacts_are_checked_up_front(tmp_path):
    graph = tmp_path / "unet.onnx"
    graph.write_bytes(b"graph")
    engine = tmp_path / "unet.engine"
    engine.write_bytes(b"engine")
    two_models = [{"name": "unet"}, {"name": "fcn8s"}]
    ok = config(backends=[{"name": "onnxruntime", "artifact": str(graph)}])
    assert ok.backends[0].artifact == graph and ok.backends[0].variant() == {"artifact": str(graph)}
    assert config(backends=[{"name": "tensorrt", "artifact": str(engine), "model": "unet"}])
    missing = str(tmp_path / "no.onnx")
    cases = [
        ({"backends": [{"name": "onnxruntime", "artifact": missing}]}, "artifact file not found"),
        ({"backends": [{"name": "onnxruntime", "artifact": str(engine)}]}, "onnxruntime runs .onnx files"),
        ({"models": two_models, "backends": [{"name": "onnxruntime", "artifact": str(graph)}]},
         "backends[0].artifact: name the model it belongs to with model: NAME"),
        ({"backends": [{"name": "torch", "model": "fcn8s"}]}, "backends[0].model: fcn8s is not in models"),
        ({"backends": [{"name": "tensorrt", "device": "cpu"}]}, "tensorrt runs on NVIDIA GPUs only"),
    ]  # fmt: skip
    for changes, message in cases:
        with pytest.raises(ConfigError) as error:
            config(**changes)
        assert message in str(error.value) and "\n" not in str(error.value)
