"""The options `harden`, `evaluate` and `models upload` share, declared once as option groups:
each command still takes every one, with its help, panel and bounds, and the command's own
options keep theirs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("harden",), ["--input-shape", "--eval-steps", "--epsilon", "PGD steps of the training"]),
        (("evaluate",), ["--input-shape", "--eval-steps", "--epsilon", "--attack"]),
        (("models", "upload"), ["--input-shape", "--num-classes", "--format"]),
    ],
)
def test_each_command_lists_its_grouped_options_with_their_help(
    command: tuple[str, ...], expected: list[str]
) -> None:
    text = help_of(*command)

    assert all(option in text for option in expected), text
    assert "The input the model takes" in text


def test_a_commands_own_option_keeps_its_bounds() -> None:
    result = runner.invoke(
        app, ["--api-key", "rk_x", "harden", "mdl_1", "--steps", "0"], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 2 and "--steps" in result.output


def test_a_grouped_option_keeps_its_bounds() -> None:
    result = runner.invoke(
        app, ["--api-key", "rk_x", "evaluate", "mdl_1", "--restarts", "0"], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 2 and "--restarts" in result.output
