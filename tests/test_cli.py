"""The `hla-deploy` entry point and the README's two set-up commands (what CI runs)."""
import re
import subprocess
import sys
from pathlib import Path

from hla_deploy.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def _block(text, name):
    m = re.search(rf"<!-- {name} -->\n```\n(.*?)\n```\n<!-- /{name} -->", text, re.S)
    assert m, f"README.md has no <!-- {name} --> block"
    return m.group(1).strip()


def test_readme_has_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    main, tests = _block(text, "main-command"), _block(text, "test-command")
    assert len(main.splitlines()) == 1 and len(tests.splitlines()) == 1
    assert "pip install torch==2.13.0" in main and main.endswith("hla-deploy quickstart")
    # the CPU runtime (onnxruntime is an extra, [cpu] or [gpu]) and the torch side ([export]); torch
    # first, so that the CPU build of torch is the one installed
    assert "pip install -e '.[cpu,export]'" in main
    assert main.index("pip install torch==2.13.0") < main.index("pip install -e")
    assert "pip install -e '.[cpu,test]'" in tests and "pytest" in tests
    assert text.count("<!-- main-command -->") == 1 and text.count("<!-- test-command -->") == 1


def test_test_extra_installs_what_the_tests_need():
    """`.ci/run` installs [cpu,test] on a clean clone: [test] must carry the [export] packages."""
    import tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(extras["export"]) <= set(extras["test"])
    assert not [d for d in base if d.split(">")[0].split("=")[0].strip() in ("torch", "onnxscript", "safetensors")]
    from hla_deploy.extras import EXTRAS
    for module in EXTRAS["export"][0]:  # every module the [export] check looks for is in the extra
        assert any(d.startswith(module) for d in extras["export"]), module


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run extracts the block between the test-command markers and executes it
    out = subprocess.run(["bash", "-c", ci.split("if [ -z")[0] + 'printf "%s" "$cmd"'],
                         cwd=ROOT / ".ci", capture_output=True, text=True, check=True).stdout
    assert out.strip() == _block((ROOT / "README.md").read_text(), "test-command")


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "hla_deploy", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name, _, _ in COMMANDS:
        assert name in out
    parser = build_parser()
    for name, _, _ in COMMANDS:  # every subcommand parses its own --help without error
        try:
            parser.parse_args([name, "--help"])
        except SystemExit as e:
            assert e.code == 0


def test_no_command_prints_help_and_exits_zero():
    r = subprocess.run([sys.executable, "-m", "hla_deploy"], capture_output=True, text=True)
    assert r.returncode == 0 and "quickstart" in r.stdout


def test_unexpected_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    import hla_deploy.runtime.cli as generate_cli
    from hla_deploy.cli import main

    def boom(args):
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(generate_cli, "run", boom)
    monkeypatch.delenv("HLA_DEPLOY_DEBUG", raising=False)
    assert main(["generate", "x.onnx"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: simulated failure" in err[0] and "Traceback" not in err[0]
    monkeypatch.setenv("HLA_DEPLOY_DEBUG", "1")
    import pytest
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["generate", "x.onnx"])
