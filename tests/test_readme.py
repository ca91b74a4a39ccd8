"""The README is the operator's manual: every setting is documented there."""

from pathlib import Path

from core.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert not missing, f"settings missing from README: {missing}"


def test_quick_start_is_two_commands() -> None:
    start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = start.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
