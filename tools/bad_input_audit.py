"""A bad-input audit of the spt commands (issue #14's four categories: params, artifacts,
outputs, data), run as a user would: `python tools/bad_input_audit.py` from the suite's
environment (about 13 minutes on 2 cores; `ONLY="<case name>"` runs one case). It writes its
scratch tree under /tmp/audit/work and the verdicts to /tmp/audit/results.csv.

Each case builds its inputs under a fresh folder, runs one command as a subprocess (60 s cap)
and is classified: clean (the expected outcome: a one-line `error:` with exit 2 for a refusal,
exit 0 for an input that must work), traceback, silent (exit 0 where a refusal was due, or a
refusal where success was due), loss (a sentinel file changed or vanished), hang (timeout).
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

BASE = Path(os.environ.get("AUDIT_ROOT", "/tmp/audit")) / "work"
SPT = [sys.executable, "-m", "spt.cli"]
ENV = {**os.environ, "SPT_THREADS": "1"}


def run(argv, cwd, timeout=60):
    try:
        p = subprocess.run(
            SPT + argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
        )
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", ""


def setup_base():
    if BASE.exists():
        shutil.rmtree(BASE)
    BASE.mkdir(parents=True)
    (BASE / "empty.yaml").write_text("")
    assert (
        run(
            ["synth", "--out", "raw", "--layouts", "mtd", "folder", "--defects-per-type", "3"], BASE
        )[0]
        == 0
    )
    code = run(
        ["prepare", "--params", "empty.yaml", "--synthetic", "raw", "--out", "prepared"], BASE
    )
    assert code[0] == 0, code
    # a short trained lora for artifact cases
    code = run(
        [
            "train",
            "--params",
            "empty.yaml",
            "--method",
            "lora",
            "--datasets",
            "mtd_twin",
            "--prepared-root",
            "prepared",
            "--out",
            "train",
            "--epochs",
            "1",
            "--limit",
            "2",
            "--no-progress",
        ],
        BASE,
        timeout=300,
    )
    assert code[0] == 0, code
    code = run(
        [
            "evaluate",
            "--params",
            "empty.yaml",
            "--method",
            "zero_shot",
            "--datasets",
            "mtd_twin",
            "--prepared-root",
            "prepared",
            "--out",
            "eval",
            "--prompt-modes",
            "box",
            "--limit",
            "2",
            "--no-progress",
        ],
        BASE,
        timeout=300,
    )
    assert code[0] == 0, code


def case_dir(name):
    d = BASE / "cases" / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(BASE, d, ignore=shutil.ignore_patterns("cases"))
    return d


EVAL = [
    "evaluate",
    "--method",
    "zero_shot",
    "--datasets",
    "mtd_twin",
    "--prepared-root",
    "prepared",
    "--out",
    "ev2",
    "--prompt-modes",
    "box",
    "--limit",
    "1",
    "--no-progress",
]
TRAIN = [
    "train",
    "--method",
    "lora",
    "--datasets",
    "mtd_twin",
    "--prepared-root",
    "prepared",
    "--out",
    "tr2",
    "--epochs",
    "1",
    "--limit",
    "1",
    "--no-progress",
]
LORA_EVAL = [
    "evaluate",
    "--method",
    "lora",
    "--datasets",
    "mtd_twin",
    "--prepared-root",
    "prepared",
    "--out",
    "ev3",
    "--prompt-modes",
    "box",
    "--limit",
    "1",
    "--no-progress",
    "--trained",
    "train/lora/tiny/trained.pt",
]
REPORT = [
    "report",
    "--eval-root",
    "eval",
    "--train-root",
    "train",
    "--prepared-root",
    "prepared",
    "--out",
    "rep",
    "--n-boot",
    "50",
    "--figure-n-boot",
    "20",
    "--reference-method",
    "zero_shot",
]

CASES = []


def case(category, name, expect="refuse"):
    def wrap(fn):
        CASES.append((category, name, expect, fn))
        return fn

    return wrap


def params_case(name, params, command=EVAL, expect="refuse", text=None):
    def fn(d):
        p = d / "p.yaml"
        p.write_text(text if text is not None else yaml.safe_dump(params))
        return [*command, "--params", "p.yaml"], []

    CASES.append(("params", name, expect, fn))


# --- params ------------------------------------------------------------------------------------
params_case("train.epochs 0", {"train": {"epochs": 0}}, TRAIN)
params_case("train.epochs 1.5", {"train": {"epochs": 1.5}}, TRAIN)
params_case("train.batch_size '4'", {"train": {"batch_size": "4"}}, TRAIN)
params_case("train.weight_decay -1", {"train": {"weight_decay": -1}}, TRAIN)
params_case("train.grad_clip 'off'", {"train": {"grad_clip": "off"}}, TRAIN)
params_case("train.prompt_modes [points-0]", {"train": {"prompt_modes": ["points-0"]}}, TRAIN)
params_case("train.augment.lsj_scale [0, 1]", {"train": {"augment": {"lsj_scale": [0, 1]}}}, TRAIN)
params_case(
    "train.augment.lsj_scale [1,2,3]", {"train": {"augment": {"lsj_scale": [1, 2, 3]}}}, TRAIN
)
params_case("train.augment.vflip (unknown)", {"train": {"augment": {"vflip": 0.5}}}, TRAIN)
params_case(
    "train.datasets []",
    {"train": {"datasets": []}},
    ["train", "--method", "lora", "--prepared-root", "prepared", "--out", "tr2", "--no-progress"],
)
params_case("methods.lora.train.epochs 0", {"methods": {"lora": {"train": {"epochs": 0}}}}, TRAIN)
params_case("methods.lora.rank 0", {"methods": {"lora": {"rank": 0}}}, TRAIN)
params_case("methods.lora.targets q", {"methods": {"lora": {"targets": "q"}}}, TRAIN)
params_case("methods.lora.dropout 1.0", {"methods": {"lora": {"dropout": 1.0}}}, TRAIN)
params_case(
    "methods.adapter.placement all",
    {"methods": {"adapter": {"placement": "all"}}},
    [*TRAIN[:2], "adapter", *TRAIN[3:]],
)
params_case(
    "methods.spt.relation_blocks [2]",
    {"methods": {"spt": {"relation_blocks": [2]}}},
    [*TRAIN[:2], "spt", *TRAIN[3:]],
)
params_case(
    "methods.spt.official_checkpoint 5",
    {"methods": {"spt": {"official_checkpoint": 5}}},
    [*TRAIN[:2], "spt", *TRAIN[3:]],
)
params_case(
    "methods.wesam.temperature .nan",
    None,
    [*TRAIN[:2], "wesam", *TRAIN[3:]],
    text="methods:\n  wesam:\n    temperature: .nan\n",
)
params_case(
    "methods.wesam.contrastive_form nce",
    {"methods": {"wesam": {"contrastive_form": "nce"}}},
    [*TRAIN[:2], "wesam", *TRAIN[3:]],
)
params_case(
    "methods.zero_shot.multimask_output 'yes'",
    {"methods": {"zero_shot": {"multimask_output": "yes"}}},
)
params_case("methods.Lora (case)", {"methods": {"Lora": {"rank": 4}}})
params_case("evaluate.prompt_modes [boxx]", {"evaluate": {"prompt_modes": ["boxx"]}})
params_case("evaluate.prompt_modes box (lone)", {"evaluate": {"prompt_modes": "box"}}, expect="ok")
params_case("evaluate.resize Square", {"evaluate": {"resize": "Square"}})
params_case("evaluate.instances 'no'", {"evaluate": {"instances": "no"}})
params_case("evaluate.mask_prompt_logit -5", {"evaluate": {"mask_prompt_logit": -5}})
params_case(
    "evaluate.datasets [mtd_twin, mtd_twin]",
    {"evaluate": {"datasets": ["mtd_twin", "mtd_twin"]}},
    [
        "evaluate",
        "--method",
        "zero_shot",
        "--prepared-root",
        "prepared",
        "--out",
        "ev2",
        "--limit",
        "1",
        "--no-progress",
    ],
)
params_case("evaluate.seed 2**40", {"evaluate": {"seed": 2**40}})
params_case("pipeline.seeds []", {"pipeline": {"seeds": []}})
params_case("pipeline.backbone vit_x", {"pipeline": {"backbone": "vit_x"}})
params_case("pipeline.prepared_roots 5", {"pipeline": {"prepared_roots": 5}})
params_case("pipeline.sam_checkpoint missing file", {"pipeline": {"sam_checkpoint": "nope.pth"}})
params_case("sam.checkpoints [a]", {"sam": {"checkpoints": ["a"]}})
params_case("sam.checkpoint_dir 3", {"sam": {"checkpoint_dir": 3}})
params_case("report.examples -1", {"report": {"examples": -1}}, REPORT)
params_case("report.reference_method ''", {"report": {"reference_method": ""}}, REPORT)
params_case("report.figure_n_boot 0", {"report": {"figure_n_boot": 0}}, REPORT)
params_case(
    "data.train_fraction 1",
    {"data": {"train_fraction": 1}},
    ["prepare", "--synthetic", "raw", "--out", "pp"],
)
params_case(
    "data.workers -2", {"data": {"workers": -2}}, ["prepare", "--synthetic", "raw", "--out", "pp"]
)
params_case(
    "data.synthetic.defects_per_type 1",
    {"data": {"synthetic": {"defects_per_type": 1}}},
    ["prepare", "--synthetic", "raw2", "--out", "pp"],
)
params_case(
    "data.datasets.x.layout mvtecad",
    {"data": {"datasets": {"x": {"layout": "mvtecad"}}}},
    ["prepare", "--out", "pp"],
)
params_case(
    "data.datasets.X upper name",
    {"data": {"datasets": {"X": {"layout": "mtd", "root": "raw/mtd"}}}},
    ["prepare", "--out", "pp"],
)
params_case(
    "data.datasets.x.mask_convention otsu",
    {"data": {"datasets": {"x": {"layout": "mtd", "root": "raw/mtd", "mask_convention": "otsu"}}}},
    ["prepare", "--out", "pp"],
)
params_case("top-level unknown 'evalution'", {"evalution": {"seed": 1}})
params_case("empty params file", None, ["config"], expect="ok", text="")
params_case("params is a list", None, ["config"], text="- a\n- b\n")
params_case("params is a scalar", None, ["config"], text="42\n")
params_case("tab-indented YAML", None, ["config"], text="evaluate:\n\tseed: 1\n")
params_case("duplicate nested key", None, ["config"], text="train:\n  epochs: 1\n  epochs: 2\n")
params_case("binary junk", None, ["config"], text="\x00\x01\x02\xff")
params_case("2 MB params", None, ["config"], text="# x\n" * 600_000)
params_case("deep nesting", None, ["config"], text="a: " + "[" * 5000 + "]" * 5000 + "\n")
params_case(
    "alias bomb",
    None,
    ["config"],
    text="a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"b{i}: &b{i} [" + ", ".join([f"*{'a' if i == 0 else 'b' + str(i - 1)}"] * 10) + "]\n"
        for i in range(12)
    ),
)
params_case(
    "python tag", None, ["config"], text="evaluate: !!python/object/apply:os.system ['echo hi']\n"
)
params_case("seed as 1e3 text", {"evaluate": {"seed": "1e3"}})
params_case("lr as 1e-3 text", None, TRAIN, text="train:\n  lr: 1e-3\n")


@case("params", "--params is a FIFO")
def _(d):
    os.mkfifo(d / "fifo.yaml")
    return [*EVAL, "--params", "fifo.yaml"], []


@case("params", "--params is missing")
def _(d):
    return [*EVAL, "--params", "missing.yaml"], []


@case("params", "--seed -3 on the command line")
def _(d):
    return [*EVAL, "--params", "empty.yaml", "--seed", "-3"], []


@case("params", "--limit 0")
def _(d):
    return [*EVAL, "--params", "empty.yaml", "--limit", "0"], []


# --- artifacts ---------------------------------------------------------------------------------
def trained(d):
    return d / "train" / "lora" / "tiny" / "trained.pt"


@case("artifacts", "trained.pt truncated")
def _(d):
    t = trained(d)
    t.write_bytes(t.read_bytes()[:1000])
    return [*LORA_EVAL, "--params", "empty.yaml"], []


@case("artifacts", "trained.pt of lora given to adapter")
def _(d):
    argv = [*LORA_EVAL, "--params", "empty.yaml"]
    argv[argv.index("lora")] = "adapter"
    return argv, []


@case("artifacts", "trained.pt with other lora rank")
def _(d):
    (d / "p.yaml").write_text("methods:\n  lora:\n    rank: 4\n")
    return [*LORA_EVAL, "--params", "p.yaml"], []


@case("artifacts", "trained.pt with inf weights")
def _(d):
    blob = torch.load(trained(d), weights_only=True)
    k = next(iter(blob["trained"]))
    blob["trained"][k] = blob["trained"][k] + float("inf")
    torch.save(blob, trained(d))
    return [*LORA_EVAL, "--params", "empty.yaml"], []


@case("artifacts", "trained.pt tensors of another shape")
def _(d):
    blob = torch.load(trained(d), weights_only=True)
    k = next(iter(blob["trained"]))
    blob["trained"][k] = torch.zeros(3)
    torch.save(blob, trained(d))
    return [*LORA_EVAL, "--params", "empty.yaml"], []


@case("artifacts", "trained.pt is a zip of junk")
def _(d):
    import zipfile

    with zipfile.ZipFile(trained(d), "w") as z:
        z.writestr("x/data.pkl", b"junk")
    return [*LORA_EVAL, "--params", "empty.yaml"], []


@case("artifacts", "records.parquet is text (report)")
def _(d):
    (d / "eval" / "zero_shot" / "tiny" / "records.parquet").write_text("hello")
    return [*REPORT, "--params", "empty.yaml"], []


@case("artifacts", "records dataset '../x' (report)")
def _(d):
    p = d / "eval" / "zero_shot" / "tiny" / "records.parquet"
    f = pd.read_parquet(p)
    f["dataset"] = "../x"
    f.to_parquet(p)
    return [*REPORT, "--params", "empty.yaml"], []


@case("artifacts", "records backbone with slash (report)")
def _(d):
    p = d / "eval" / "zero_shot" / "tiny" / "records.parquet"
    f = pd.read_parquet(p)
    f["backbone"] = "a/b"
    f.to_parquet(p)
    return [*REPORT, "--params", "empty.yaml"], []


@case("artifacts", "duplicate records folder (report)")
def _(d):
    shutil.copytree(d / "eval" / "zero_shot", d / "eval" / "seed0" / "zero_shot")
    return [*REPORT, "--params", "empty.yaml"], []


@case("artifacts", "records missing a column (report)")
def _(d):
    p = d / "eval" / "zero_shot" / "tiny" / "records.parquet"
    pd.read_parquet(p).drop(columns=["iou"]).to_parquet(p)
    return [*REPORT, "--params", "empty.yaml"], []


def manifest(d):
    return d / "prepared" / "mtd_twin" / "manifest.csv"


@case("artifacts", "manifest missing a column")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str).drop(columns=["split"])
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest image path missing file")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str)
    f["image_path"] = "/nonexistent/x.png"
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest image edited after prepare")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str)
    test = f[(f["split"] == "test") & (f["label"] == "defect")].sort_values("image_id").index[0]
    src = Path(f.loc[test, "image_path"])
    src = src if src.is_absolute() else d / src
    copy = d / "edited.jpg"
    copy.write_bytes(src.read_bytes() + b"\0")
    f.loc[test, "image_path"] = str(copy)
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest image is a FIFO")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str)
    os.mkfifo(d / "fifo.png")
    f["image_path"] = str(d / "fifo.png")
    f["image_sha256"] = ""
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest mask is a folder")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str)
    (d / "maskdir").mkdir()
    f.loc[f["mask_path"] != "", "mask_path"] = str(d / "maskdir")
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest mask_pixels 'many'")
def _(d):
    f = pd.read_csv(manifest(d), keep_default_na=False, dtype=str)
    f["mask_pixels"] = "many"
    f.to_csv(manifest(d), index=False)
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "manifest is empty file")
def _(d):
    manifest(d).write_text("")
    return [*EVAL, "--params", "empty.yaml"], []


@case("artifacts", "regress reference invalid JSON")
def _(d):
    (d / "ref.json").write_text("{")
    return ["regress", "--records", "eval", "--reference", "ref.json"], []


@case("artifacts", "regress reference missing")
def _(d):
    return ["regress", "--records", "eval", "--reference", "nope.json"], []


@case("artifacts", "regress records folder empty")
def _(d):
    (d / "none").mkdir()
    return ["regress", "--records", "none", "--reference", "nope.json"], []


# --- outputs -----------------------------------------------------------------------------------
@case("outputs", "evaluate --out is a file")
def _(d):
    (d / "ev2").write_text("keep")
    return [*EVAL, "--params", "empty.yaml"], [d / "ev2"]


@case("outputs", "evaluate records.parquet path is a folder")
def _(d):
    (d / "ev2" / "zero_shot" / "tiny" / "records.parquet").mkdir(parents=True)
    return [*EVAL, "--params", "empty.yaml"], []


@case("outputs", "report --out is a file")
def _(d):
    (d / "rep").write_text("keep")
    return [*REPORT, "--params", "empty.yaml"], [d / "rep"]


@case("outputs", "train --out is a file")
def _(d):
    (d / "tr2").write_text("keep")
    return [*TRAIN, "--params", "empty.yaml"], [d / "tr2"]


@case("outputs", "synth over a twin with a user file")
def _(d):
    (d / "raw" / "mtd" / "mine.txt").write_text("keep")
    return ["synth", "--out", "raw", "--layouts", "mtd"], [d / "raw" / "mtd" / "mine.txt"]


@case("outputs", "synth into a non-twin folder with files")
def _(d):
    (d / "other" / "mtd").mkdir(parents=True)
    (d / "other" / "mtd" / "x.txt").write_text("keep")
    return ["synth", "--out", "other", "--layouts", "mtd"], [d / "other" / "mtd" / "x.txt"]


@case("outputs", "prepare --out is a file")
def _(d):
    (d / "pp").write_text("keep")
    return ["prepare", "--params", "empty.yaml", "--synthetic", "raw", "--out", "pp"], [d / "pp"]


@case("outputs", "regress --update into a missing folder", expect="ok")
def _(d):
    return ["regress", "--records", "eval", "--reference", "new/ref.json", "--update"], []


# --- data --------------------------------------------------------------------------------------
def prepare_case(d, name, layout, root, *extra, **options):
    """`spt prepare` of one configured dataset; ``options`` are its layout options."""
    spec = {"layout": layout, "root": root, **options}
    (d / "p.yaml").write_text(yaml.safe_dump({"data": {"datasets": {name: spec}}}))
    return ["prepare", "--params", "p.yaml", "--out", "pp", *extra]


def folder_case(d, **options):
    return prepare_case(d, "line", "folder", "raw/folder", **options)


@case("data", "folder images: ../mtd")
def _(d):
    keep = sorted((d / "raw" / "mtd").rglob("*.jpg"))[0]
    return folder_case(d, images="../mtd"), [keep]


@case("data", "folder masks: /tmp absolute outside")
def _(d):
    return folder_case(d, masks="/tmp"), []


@case("data", "folder images folder missing")
def _(d):
    return folder_case(d, images="nope"), []


@case("data", "folder unknown option")
def _(d):
    return folder_case(d, imagez="images"), []


@case("data", "folder mask_suffix 5")
def _(d):
    return folder_case(d, mask_suffix=5), []


@case("data", "dataset root missing", expect="ok")
def _(d):
    return prepare_case(d, "m", "mtd", "nope"), []


@case("data", "mtd image truncated", expect="ok")
def _(d):
    img = sorted((d / "raw" / "mtd").rglob("*.jpg"))[0]
    img.write_bytes(img.read_bytes()[:200])
    return prepare_case(d, "m", "mtd", "raw/mtd"), []


@case("data", "mtd mask is a FIFO", expect="ok")
def _(d):
    m = sorted((d / "raw" / "mtd").rglob("*.png"))[0]
    m.unlink()
    os.mkfifo(m)
    return prepare_case(d, "m", "mtd", "raw/mtd"), []


@case("data", "mtd image size differs from mask", expect="ok")
def _(d):
    img = sorted((d / "raw" / "mtd").rglob("*.jpg"))[0]
    Image.new("RGB", (7, 9)).save(img, format="JPEG")
    return prepare_case(d, "m", "mtd", "raw/mtd"), []


@case("data", "synth --layouts nope")
def _(d):
    return ["synth", "--out", "s2", "--layouts", "nope"], []


@case("data", "synth --seed abc")
def _(d):
    return ["synth", "--out", "s2", "--seed", "abc"], []


# --- more cases ----------------------------------------------------------------------------------
PRETRAIN = ["pretrain", "--out", "pt", "--scenes", "2", "--epochs", "1", "--no-progress"]
params_case("train.lr 0", {"train": {"lr": 0}}, TRAIN)
params_case("train.lr_gamma 0", {"train": {"lr_gamma": 0}}, TRAIN)
params_case("train.warmup_steps -1", {"train": {"warmup_steps": -1}}, TRAIN)
params_case("train.seed 1.0", {"train": {"seed": 1.0}}, TRAIN)
params_case("pretrain.batch_size 99 > scenes", {"pretrain": {"batch_size": 99}}, PRETRAIN)
params_case("pretrain.probe_modes [boxx]", {"pretrain": {"probe_modes": ["boxx"]}}, PRETRAIN)
params_case("pretrain.loss_points 0", {"pretrain": {"loss_points": 0}}, PRETRAIN)
params_case(
    "evaluate.prompt_modes repeated",
    {"evaluate": {"prompt_modes": ["box", "box"]}},
    [
        "evaluate",
        "--method",
        "zero_shot",
        "--datasets",
        "mtd_twin",
        "--prepared-root",
        "prepared",
        "--out",
        "ev2",
        "--limit",
        "1",
        "--no-progress",
    ],
)
params_case(
    "pipeline.datasets repeated",
    {"pipeline": {"datasets": ["mtd_twin", "mtd_twin"]}},
    [
        "evaluate",
        "--method",
        "zero_shot",
        "--prepared-root",
        "prepared",
        "--out",
        "ev2",
        "--limit",
        "1",
        "--no-progress",
    ],
)
params_case("pipeline.optional_datasets 5", {"pipeline": {"optional_datasets": 5}})
params_case("report.reference_method nope", {"report": {"reference_method": "nope"}}, REPORT[:-2])
params_case(
    "data.seed -1", {"data": {"seed": -1}}, ["prepare", "--synthetic", "raw", "--out", "pp"]
)
params_case(
    "data.raw_root []", {"data": {"raw_root": []}}, ["prepare", "--synthetic", "raw", "--out", "pp"]
)
params_case("data.datasets is a list", {"data": {"datasets": ["mtd"]}}, ["prepare", "--out", "pp"])
params_case(
    "methods.spt.lora_rank 2.0",
    {"methods": {"spt": {"lora_rank": 2.0}}},
    [*TRAIN[:2], "spt", *TRAIN[3:]],
)
params_case(
    "methods.adapter.mlp_scale .inf",
    None,
    [*TRAIN[:2], "adapter", *TRAIN[3:]],
    text="methods:\n  adapter:\n    mlp_scale: .inf\n",
)
params_case(
    "methods.wesam.max_instances 0",
    {"methods": {"wesam": {"max_instances": 0}}},
    [*TRAIN[:2], "wesam", *TRAIN[3:]],
)
params_case(
    "methods.lora.peft_adapter missing", {"methods": {"lora": {"peft_adapter": "nope_dir"}}}, TRAIN
)


# --- data truth (#13): inputs once misread without a word; each must name its issue kind -------
def _folder_pair(d, stem, image, mask=None, mask_name=None):
    """One more image (and mask) in the folder twin's raw copy."""
    root = d / "raw" / "folder"
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    if mask is not None:
        Image.fromarray(mask).save(root / "masks" / (mask_name or f"{stem}_mask.png"))


def _box(value, dtype=np.uint8):
    mask = np.zeros((88, 120), dtype)
    mask[20:50, 30:70] = value
    return mask


def _image():
    return np.full((88, 120, 3), 90, np.uint8)


@case("truth", "16-bit grey image", expect="issue:image_converted")
def _(d):
    _folder_pair(d, "wide", (np.arange(88 * 120).reshape(88, 120) * 5).astype(np.uint16))
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "EXIF-rotated image", expect="issue:refused_image")
def _(d):
    image = Image.fromarray(_image())
    exif = image.getexif()
    exif[0x0112] = 8
    image.save(d / "raw" / "folder" / "images" / "rot.png", exif=exif)
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "header claims 10000x10000", expect="issue:refused_image")
def _(d):
    import struct
    import zlib

    png = io.BytesIO()
    Image.new("L", (1, 1)).save(png, format="PNG")
    data = bytearray(png.getvalue())
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", 10000, 10000)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])))
    (d / "raw" / "folder" / "images" / "bomb.png").write_bytes(bytes(data))
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "{0,1} folder mask", expect="issue:mask_below_threshold")
def _(d):
    _folder_pair(d, "ones", _image(), _box(1))
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "16-bit mask, foreground 1000", expect="issue:mask_below_threshold")
def _(d):
    _folder_pair(d, "wide", _image(), _box(1000, np.uint16))
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", ".mat ground truth", expect="issue:unsupported_mask_format")
def _(d):
    _folder_pair(d, "gt", _image())
    (d / "raw" / "folder" / "masks" / "gt_mask.mat").write_bytes(b"MATLAB 5.0" + bytes(64))
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "images/dirloop -> .", expect="issue:folder_link")
def _(d):
    (d / "raw" / "folder" / "images" / "dirloop").symlink_to(".")
    return folder_case(d, mask_suffix="_mask"), []


@case("truth", "unannotated: exclude", expect="issue:unannotated")
def _(d):
    return folder_case(d, mask_suffix="_mask", unannotated="exclude"), []


@case("truth", "nonzero masks with background 1", expect="issue:masks_cover_images")
def _(d):
    for mask in sorted((d / "raw" / "folder" / "masks").glob("*.png")):
        values = np.asarray(Image.open(mask))
        Image.fromarray(np.where(values > 0, 2, 1).astype(np.uint8)).save(mask)
    return folder_case(d, mask_suffix="_mask", mask_convention="nonzero"), []


@case("truth", "readme.txt in the MTD root", expect="issue:not_read")
def _(d):
    (d / "raw" / "mtd" / "readme.txt").write_text("MTD\n")
    return prepare_case(d, "m", "mtd", "raw/mtd"), []


@case("truth", "MTD 2-pixel defect", expect="issue:tiny_defect")
def _(d):
    mask = sorted((d / "raw" / "mtd" / "MT_Crack" / "Imgs").glob("*.png"))[0]
    values = np.zeros_like(np.asarray(Image.open(mask)))
    values[5, 5:7] = 255
    Image.fromarray(values).save(mask)
    return prepare_case(d, "m", "mtd", "raw/mtd"), []


@case("truth", "MVTec AD 2 root as layout mvtec")
def _(d):
    root = d / "raw" / "ad2" / "can"
    for folder in ("train/good", "test_public/good"):
        (root / folder).mkdir(parents=True)
        Image.fromarray(_image()).save(root / folder / "000_regular.png")
    return prepare_case(d, "ad2", "mvtec", "raw/ad2"), []


def cli_case(name, extra, base=EVAL, expect="refuse"):
    def fn(d):
        return [*base, "--params", "empty.yaml", *extra], []

    CASES.append(("params", name, expect, fn))


cli_case("--prompt-modes boxx", ["--prompt-modes", "boxx"])
cli_case("--resize foo", ["--resize", "foo"])
cli_case("--datasets missing_ds", ["--datasets", "missing_ds"])
cli_case("--backbone vit_b without checkpoint", ["--backbone", "vit_b"])
cli_case("--backbone nope", ["--backbone", "nope"])
cli_case("--device cuda without a GPU", ["--device", "cuda"])
cli_case("--device tpu", ["--device", "tpu"])
cli_case("--trained is a folder", ["--trained", "train"], LORA_EVAL[:-2])
cli_case(
    "--epochs 0",
    ["--epochs", "0"],
    TRAIN[: TRAIN.index("--epochs")] + TRAIN[TRAIN.index("--epochs") + 2 :],
)
cli_case("--n-boot 0", ["--n-boot", "0"], REPORT)
cli_case("--examples 0", ["--examples", "0"], REPORT)
cli_case("--workers -1", ["--workers", "-1"], ["prepare", "--synthetic", "raw", "--out", "pp"])
cli_case("report twice into one --out", [], REPORT, expect="ok")


@case("data", "mtd root is a file", expect="ok")
def _(d):
    (d / "afile").write_text("x")
    return prepare_case(d, "m", "mtd", "afile"), []


@case("data", "folder dataset with no images", expect="ok")
def _(d):
    (d / "emptyline" / "images").mkdir(parents=True)
    return prepare_case(d, "e", "folder", "emptyline"), []


@case("data", "mvtec layout on an mtd root", expect="ok")
def _(d):
    return prepare_case(d, "m", "mvtec", "raw/mtd"), []


@case("data", "prepare --datasets not configured")
def _(d):
    return prepare_case(d, "m", "mtd", "raw/mtd", "--datasets", "zz"), []


def _reported_kinds(d) -> set[str]:
    kinds = set()
    for report in (d / "pp").glob("*/report.json"):
        for entry in json.loads(report.read_text())["datasets"]:
            kinds |= {issue["kind"] for issue in entry["issues"]}
    return kinds


def classify(expect, code, out, err, sentinels_before, sentinels_after, d=None):
    if code is None:
        return "hang"
    if "Traceback" in err:
        return "traceback"
    if sentinels_before != sentinels_after:
        return "loss"
    if expect.startswith("issue:"):  # prepared, and the report names the case's issue kind
        named = code in (0, 1) and expect.removeprefix("issue:") in _reported_kinds(d)
        return "clean" if named else "silent"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if expect == "refuse":
        ours = (
            code == 2
            and lines
            and lines[-1].startswith("error: ")
            and sum(line.startswith("error: ") for line in lines) == 1
        )
        argparse_usage = code == 2 and lines and re.match(r"spt \w+: error: ", lines[-1])
        # spt prepare's contract: a dataset that cannot be prepared is named with its reason
        # ("<name>: FAILED - <why>") and the run exits 1, the other datasets prepared
        prepare_failed = code == 1 and any(
            " FAILED - " in line for line in (err + out).splitlines()
        )
        return "clean" if ours or argparse_usage or prepare_failed else "silent"
    return "clean" if code in (0, 1) else "silent"


def main():
    setup_base()
    rows = []
    only = os.environ.get("ONLY")
    for category, name, expect, fn in CASES:
        if only and name != only:
            continue
        d = case_dir(f"c{len(rows):03d}")
        argv, sentinels = fn(d)
        before = [s.read_bytes() if s.is_file() else None for s in sentinels]
        code, out, err = run(argv, d)
        after = [s.read_bytes() if s.is_file() else None for s in sentinels]
        verdict = classify(expect, code, out, err, before, after, d)
        last = (err.strip().splitlines() or [""])[-1][:160]
        rows.append(
            {
                "category": category,
                "case": name,
                "expect": expect,
                "rc": code,
                "verdict": verdict,
                "message": last,
            }
        )
        print(f"{verdict:9s} {category:9s} {name:45s} rc={code} {last[:110]}", flush=True)
        os.system(f"chmod -R u+w {d} 2>/dev/null")
    frame = pd.DataFrame(rows)
    frame.to_csv(BASE.parent / ("results_only.csv" if only else "results.csv"), index=False)
    table = frame.pivot_table(
        index="category", columns="verdict", values="case", aggfunc="count", fill_value=0
    )
    print(table.to_string())
    print("total", len(frame), dict(frame["verdict"].value_counts()))


if __name__ == "__main__":
    main()
