"""What grpo_cli.compat relies on in TRL, transformers, accelerate and torch still exists in the installed versions:
a release that moves one fails here, not in a user's run."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from grpo_cli.compat import MODULES, Relies

COMPAT_DIR = Path(__file__).parent.parent / "grpo_cli" / "compat"


def _relied() -> list[tuple[str, Relies]]:
    return [(module, entry) for module in MODULES for entry in importlib.import_module(module).RELIES_ON]


@pytest.mark.parametrize(
    ("compat_module", "entry"),
    _relied(),
    ids=[f"{module.rsplit('.', 1)[1]}:{entry.module}.{entry.name}" for module, entry in _relied()],
)
def test_what_compat_relies_on_exists(compat_module, entry):
    if entry.since:
        from importlib.metadata import version

        from packaging.version import Version

        installed = version(entry.module.split(".")[0])
        if Version(installed) < Version(entry.since):
            pytest.skip(f"{entry.module}.{entry.name}: from {entry.since} on, {installed} installed")
    target = importlib.import_module(entry.module)
    for part in entry.name.split("."):
        assert hasattr(target, part), (
            f"{entry.module}.{entry.name}: no {part!r} ({compat_module}: {entry.why})"
        )
        target = inspect.getattr_static(target, part) if inspect.isclass(target) else getattr(target, part)
    # A property's source is its getter's and setter's.
    functions = [f for f in (target.fget, target.fset) if f] if isinstance(target, property) else [target]
    if entry.params:
        params = inspect.signature(functions[0]).parameters
        missing = [p for p in entry.params if p not in params]
        assert not missing, f"{entry.module}.{entry.name} takes no {missing} ({compat_module}: {entry.why})"
    if entry.source:
        source = "".join(inspect.getsource(f) for f in functions)
        missing = [text for text in entry.source if text not in source]
        assert not missing, (
            f"{entry.module}.{entry.name} no longer has {missing} ({compat_module}: {entry.why})"
        )


def test_every_compat_module_declares_its_versions_and_reliances():
    assert sorted(
        f"grpo_cli.compat.{p.stem}" for p in COMPAT_DIR.glob("*.py") if p.stem != "__init__"
    ) == sorted(MODULES)
    for name in MODULES:
        module = importlib.import_module(name)
        assert module.CHECKED_AGAINST and all(module.CHECKED_AGAINST.values()), name
        assert module.RELIES_ON and all(isinstance(entry, Relies) for entry in module.RELIES_ON), name


def test_compat_modules_sit_at_the_bottom():
    """Absolute imports only (`grpo_cli.compat.trl` never stands in for `trl`), and of grpo-cli only
    `grpo_cli.errors` and `grpo_cli.compat` itself."""
    for path in COMPAT_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "grpo_cli":
                    assert name in ("grpo_cli.errors", "grpo_cli.compat"), f"{path.name} imports {name}"


def test_set_last_rates_is_what_the_scheduler_reports():
    import torch

    from grpo_cli.compat import torch as torch_compat

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 10)
    assert torch_compat.schedule_rates(scheduler, 4) == pytest.approx([0.3])
    torch_compat.set_last_rates(scheduler, [0.3])
    assert scheduler.get_last_lr() == [0.3]
    assert torch_compat.schedule_rates(torch.optim.lr_scheduler.StepLR(optimizer, 2), 4) is None


def test_drop_printed_line_drops_only_that_line(capsys):
    from accelerate import Accelerator

    from grpo_cli.compat.accelerate import drop_printed_line
    from grpo_cli.compat.trl import PPO_BANNER

    accelerator = Accelerator(cpu=True)
    drop_printed_line(accelerator, PPO_BANNER)
    accelerator.print(PPO_BANNER)
    accelerator.print("kept", PPO_BANNER)
    assert capsys.readouterr().out == f"kept {PPO_BANNER}\n"


def test_the_empty_mask_error_is_recognised():
    import torch
    from trl.experimental.ppo.ppo_trainer import masked_var

    from grpo_cli.compat.trl import is_empty_mask_error

    with pytest.raises(ValueError) as raised:
        masked_var(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    assert is_empty_mask_error(raised.value)
    assert not is_empty_mask_error(ValueError("something else"))
