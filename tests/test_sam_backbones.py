"""The SAM backbone layer: registry builds, the tiny config, checkpoint loading and its errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from spt.artifacts import file_sha256
from spt.errors import SuiteError
from spt.sam import BACKBONES, build_sam, choose_checkpoint, get_spec, load_sam, resolve_device
from spt.sam.checkpoint import detect_backbone


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    sam = build_sam("tiny", seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def _box_forward(sam, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 128, 128, generator=gen) * 255
    batch = [
        {"image": image, "original_size": (128, 128), "boxes": torch.tensor([[10.0, 20, 90, 100]])}
    ]
    with torch.no_grad():
        return sam(batch, multimask_output=False)[0]["low_res_logits"]


def test_tiny_matches_the_parity_fixture_config():
    sam = build_sam("tiny")
    spec = get_spec("tiny")
    assert sam.image_encoder.img_size == 128 and spec.embedding_size == 8
    assert sam.image_encoder.patch_embed.proj.weight.shape == (64, 3, 16, 16)
    assert len(sam.image_encoder.blocks) == 2
    assert sam.image_encoder.blocks[1].window_size == 0  # the global block
    assert sam.image_encoder.blocks[0].window_size == 4
    assert sam.prompt_encoder.mask_input_size == (32, 32)
    assert sam.mask_decoder.num_mask_tokens == 4
    assert not sam.training


def test_tiny_forward_shapes_and_seeded_init():
    a, b, c = build_sam("tiny", seed=1), build_sam("tiny", seed=1), build_sam("tiny", seed=2)
    out = _box_forward(a)
    assert out.shape == (1, 1, 32, 32)
    assert torch.equal(out, _box_forward(b))
    assert not torch.equal(out, _box_forward(c))


def test_build_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_sam("tiny", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_vit_b_goes_through_the_registry_and_has_the_published_size():
    sam = build_sam("vit_b")
    # SAM ViT-B: 93.7M parameters (89.7M encoder, 4.1M decoder, 6K prompt encoder).
    assert _param_count(sam.image_encoder) == 89_670_912
    assert _param_count(sam) == 93_735_472
    assert detect_backbone(sam.state_dict()) == "vit_b"


def test_published_names_and_hash_prefixes():
    assert BACKBONES["vit_b"].published_sha256_prefix == "01ec64"
    assert BACKBONES["vit_l"].published_sha256_prefix == "0b3195"
    assert BACKBONES["vit_h"].published_sha256_prefix == "4b8939"
    assert BACKBONES["tiny"].published_file is None


def test_checkpoint_choice_order(tmp_path, monkeypatch):
    monkeypatch.delenv("SPT_SAM_CHECKPOINT_DIR", raising=False)
    assert choose_checkpoint("vit_b").path.as_posix() == "checkpoints/sam_vit_b_01ec64.pth"
    monkeypatch.setenv("SPT_SAM_CHECKPOINT_DIR", str(tmp_path))
    assert choose_checkpoint("vit_h").path == tmp_path / "sam_vit_h_4b8939.pth"
    assert (
        choose_checkpoint("vit_h", checkpoint_dir="x").path.as_posix() == "x/sam_vit_h_4b8939.pth"
    )
    explicit = choose_checkpoint("vit_l", {"vit_l": "/w/l.pth"}, "x")
    assert explicit.path.as_posix() == "/w/l.pth"
    assert choose_checkpoint("tiny").path is None


def test_load_round_trip(tiny_checkpoint):
    path, original = tiny_checkpoint
    loaded = load_sam("tiny", path, seed=99)  # the checkpoint wins over the seed
    assert torch.equal(_box_forward(loaded), _box_forward(original))


def test_unknown_backbone_and_device():
    with pytest.raises(SuiteError, match="unknown backbone 'vit_x'.*vit_b"):
        get_spec("vit_x")
    with pytest.raises(SuiteError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SuiteError, match="no CUDA device"):
            resolve_device("cuda")


# ---- every kind of wrong file gives one line that names the file and what was expected ----


def _one_line_error(path, backbone="tiny"):
    with pytest.raises(SuiteError) as info:
        load_sam(backbone, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "checkpoint not found" in _one_line_error(tmp_path / "nope.pth")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    message = _one_line_error(path)
    assert "checkpoint" in message and "SAM" in message


@pytest.mark.parametrize(
    "payload",
    [b"\x80\x02.", b"\x80\x02q\x00."],  # IndexError, not an UnpicklingError, inside torch
    ids=["empty-stack", "bad-memo"],
)
def test_any_unpickling_failure_is_one_line(tmp_path, payload):
    path = tmp_path / "broken.pth"
    path.write_bytes(payload)
    message = _one_line_error(path)
    assert "unreadable PyTorch checkpoint" in message and "refused" not in message


@pytest.mark.parametrize(
    ("name", "content", "looks_like"),
    [
        ("params.yaml", b"data:\n  seed: 0\n", "a text file"),
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
        ("noise.pth", bytes(range(255, 0, -1)), "unrecognised binary data"),
    ],
    ids=["text", "png", "noise"],
)
def test_a_file_that_is_no_checkpoint_is_not_called_unsafe(tmp_path, name, content, looks_like):
    path = tmp_path / name
    path.write_bytes(content)
    message = _one_line_error(path)
    assert "not a PyTorch checkpoint" in message and looks_like in message
    assert "refused" not in message and "run code" not in message


def test_a_directory_is_named_as_one(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    message = _one_line_error(folder)
    assert "is a directory" in message and "not found" not in message


@pytest.mark.parametrize(
    ("configured", "folder", "key"),
    [
        ([1], None, "sam.checkpoints must map"),
        ({"vit_b": [1, 2]}, None, "sam.checkpoints.vit_b must be a checkpoint file path"),
        ({"vit_b": 5}, None, "sam.checkpoints.vit_b"),
        (None, 5, "sam.checkpoint_dir must be a folder path"),
    ],
)
def test_malformed_checkpoint_params_name_the_key(configured, folder, key):
    with pytest.raises(SuiteError) as info:
        choose_checkpoint("vit_b", configured, folder)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path, tiny_checkpoint):
    good, _ = tiny_checkpoint
    path = tmp_path / "truncated.pth"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated" in _one_line_error(path)


class _RunsCodeOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_pickle_that_would_run_code_is_refused_not_executed(tmp_path, container):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    payload = {"image_encoder.patch_embed.proj.weight": _RunsCodeOnLoad(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # A plain pickle.load would run it (proves the file is really malicious) ...
    if container == "plain-pickle":
        control = tmp_path / "control"
        pickle.loads(pickle.dumps(_RunsCodeOnLoad(control)))
        assert control.exists()
    message = _one_line_error(path)
    assert "refused" in message and "run code" in message
    assert not marker.exists()


def test_checkpoint_of_another_backbone(tmp_path, tiny_checkpoint):
    good, _ = tiny_checkpoint
    with pytest.raises(SuiteError, match=r"holds a tiny checkpoint, but backbone vit_b"):
        load_sam("vit_b", good)
    # A vit_l-shaped encoder, asked for as vit_b: recognised from width and depth alone.
    fake_l = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}
    for i in range(24):
        fake_l[f"image_encoder.blocks.{i}.norm1.weight"] = torch.ones(1024)
    path = tmp_path / "large.pth"
    torch.save(fake_l, path)
    message = _one_line_error(path, backbone="vit_b")
    assert "holds a vit_l checkpoint" in message and "vit_b" in message


def test_not_sam_at_all(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, path)
    assert "no SAM image encoder" in _one_line_error(path)
    path2 = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path2)
    assert "not a state_dict" in _one_line_error(path2)


def test_published_name_with_wrong_hash(tmp_path, tiny_checkpoint):
    good, _ = tiny_checkpoint
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(good.read_bytes())
    assert not file_sha256(path).startswith("01ec64")
    message = _one_line_error(path, backbone="vit_b")
    assert "sha256" in message and "01ec64" in message and "download it again" in message


def test_missing_keys_are_named(tmp_path, tiny_checkpoint):
    _, sam = tiny_checkpoint
    state = sam.state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    assert "mask_decoder.iou_token.weight" in _one_line_error(path)
