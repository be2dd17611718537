"""The trainer field table used by `validate` must match the installed TRL (regenerate: python -m grpo_cli.trainer_fields)."""

import json

from grpo_cli import trainer_fields


def test_table_matches_installed_trl():
    table = json.loads(trainer_fields.TABLE_PATH.read_text())
    assert table == json.loads(json.dumps(trainer_fields.generate())), (
        "grpo_cli/trainer_fields.json drifted from the installed TRL: run `python -m grpo_cli.trainer_fields`"
    )


def test_check_value_coerces_and_explains():
    fields = trainer_fields.fields("grpo")
    assert trainer_fields.check_value(fields["learning_rate"], "1e-5") == (1e-5, None)
    assert trainer_fields.check_value(fields["num_generations"], None) == (None, None)
    _value, problem = trainer_fields.check_value(fields["max_steps"], 1.5)
    assert problem.startswith("expected int, got 1.5")
    assert trainer_fields.check_value(fields["lr_scheduler_type"], "cosine")[1] is None
