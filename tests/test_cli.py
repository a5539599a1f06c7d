"""The `spt` command line: help, the backbones listing, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import torch

from spt.cli import HelpFormatter, build_parser, main


def test_help_lists_every_subcommand(capsys):
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert "backbones" in names
    assert main([]) == 2  # no command: help, non-zero
    out = capsys.readouterr().out
    for name in names:
        assert name in out


def test_every_subcommand_has_an_explaining_help():
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        text = sub.format_help()
        assert len(sub.description or "") > 80, f"spt {name} --help explains too little"
        assert "usage: spt " + name in text
        assert sub.formatter_class is HelpFormatter  # defaults shown, descriptions kept as wrapped


def test_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "spt.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "backbones" in done.stdout


def test_python_dash_m_spt_is_the_spt_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "spt", "prepare", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: spt prepare")
    bad = subprocess.run(
        [sys.executable, "-m", "spt", "prepare", "--params", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    )


def test_help_states_no_default_that_is_not_one():
    """`--trained` has no default file: its help must not claim one, nor print `None`."""
    parser = build_parser()
    evaluate = parser._subparsers._group_actions[0].choices["evaluate"]
    text = " ".join(evaluate.format_help().split())
    trained = text[text.index("--trained FILE") : text.index("--untrained score")]
    assert "None" not in trained and "by default" not in trained


def test_no_help_prints_a_python_value_as_a_default():
    """An on/off flag or an option without a default shows no "(default: False)" or
    "(default: None)"; every other default is shown."""
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        text = " ".join(sub.format_help().split())
        for bad in (
            "(default: None)",
            "(default: False)",
            "(default: True)",
            "(default: [",
            "(default: '",
        ):
            assert bad not in text, f"spt {name} --help: {bad}"
    report = " ".join(parser._subparsers._group_actions[0].choices["report"].format_help().split())
    assert "(default: work/eval)" in report  # real defaults stay


def test_prepare_no_progress_hides_the_bars(tmp_path, capsys):
    (tmp_path / "params.yaml").touch()
    argv = ["prepare", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "p")]
    assert main(["synth", "--out", str(tmp_path / "raw"), "--layouts", "mtd"]) == 0
    capsys.readouterr()
    assert main([*argv, "--synthetic", str(tmp_path / "raw"), "--no-progress"]) == 0
    assert "img/s" not in capsys.readouterr().err
    assert main([*argv, "--synthetic", str(tmp_path / "raw")]) == 0
    assert "prepare mtd_twin" in capsys.readouterr().err  # the bar, without the flag


def test_help_does_not_import_torch():
    # Building every subcommand's parser must stay light: `spt --help` should answer at once,
    # not after the ~2 s that importing torch and segment_anything takes.
    probe = (
        "import sys; from spt.cli import build_parser; build_parser(); print(sorted("
        "m for m in ('torch', 'segment_anything', 'cv2') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "torch" not in done.stdout and "segment_anything" not in done.stdout, done.stdout


def test_backbones_lists_checkpoints(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPT_SAM_CHECKPOINT_DIR", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"sam:\n  checkpoint_dir: {tmp_path}\n")
    (tmp_path / "sam_vit_l_0b3195.pth").write_bytes(b"x")
    assert main(["backbones", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/sam_vit_b_01ec64.pth (missing" in out
    assert f"{tmp_path}/sam_vit_l_0b3195.pth (present" in out
    assert "tiny" in out and "random init" in out


def test_backbones_verify_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    params = tmp_path / "params.yaml"
    params.write_text(f"sam:\n  checkpoints:\n    tiny: {bad}\n")
    assert main(["backbones", "--params", str(params), "--verify"]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_backbones_verify_accepts_a_good_file(tmp_path, capsys):
    from spt.sam import build_sam

    good = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny").state_dict(), good)
    params = tmp_path / "params.yaml"
    params.write_text(f"sam:\n  checkpoints:\n    tiny: {good}\n")
    assert main(["backbones", "--params", str(params), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sam: [unclosed\n")
    done = subprocess.run(
        [sys.executable, "-m", "spt.cli", "backbones", "--params", str(params)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(params) in lines[0]
    assert "Traceback" not in done.stderr
