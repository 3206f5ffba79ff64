"""A job's stored config read back as the engine's settings: the evaluation preset of configs
stored before presets existed, and a stored preset the engine does not know."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from cli.job_options import EvaluationAttack
from core.service.errors import InvalidConfig
from core.service.jobs.jobconfig import EVALUATION_ATTACKS, evaluation_settings


def stored(**evaluation: Any) -> dict[str, Any]:
    return {"evaluation": {"attack_steps": 10, "restarts": 1, "max_samples": 200, **evaluation}}


def test_an_old_config_that_asked_for_autoattack_loads_as_the_autoattack_preset():
    settings = evaluation_settings(stored(autoattack=True, epsilons=None))

    assert settings.attack == "autoattack"


def test_an_old_config_without_autoattack_loads_as_the_default_preset():
    assert evaluation_settings(stored(autoattack=False)).attack == "standard"


@pytest.mark.parametrize("attack", EVALUATION_ATTACKS)
def test_a_stored_preset_is_read_as_it_is(attack: str):
    assert evaluation_settings(stored(attack=attack)).attack == attack


def test_a_stored_preset_wins_over_the_old_flag():
    # The API never stores both; a hand-edited row keeps the preset it names.
    assert evaluation_settings(stored(attack="fast", autoattack=True)).attack == "fast"


def test_an_unknown_stored_preset_is_refused_naming_the_field():
    with pytest.raises(InvalidConfig, match=r"evaluation\.attack must be one of fast"):
        evaluation_settings(stored(attack="pgd"))


def test_the_command_line_offers_the_engines_presets():
    # The CLI spells them out instead of importing the engine.
    assert get_args(EvaluationAttack) == EVALUATION_ATTACKS
