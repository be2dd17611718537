"""The reward registry: every way to name a reward, the contract, the errors users see before training.

Calling rewards (run-time checks, on_error, timeouts, pickling, reward models) is tested in test_scoring.py.

The built-ins' own values are tested in test_builtin_rewards.py; here they only stand in for "a built-in".
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_cli import registry, reward_binding, scoring
from grpo_cli._paths import REWARDS_DIR
from grpo_cli.errors import UserError
from grpo_cli.recipe import RewardEntry, load_recipe
from tests.helpers import bind, call, write

FIXTURE_DIST = Path(__file__).parent / "plugin_fixture"


def bind_error(name: str, **fields) -> str:
    with pytest.raises(UserError) as info:
        bind(name, **fields)
    message = str(info.value)
    assert "\n" not in message, "a mistake before training is reported on one line"
    return message


def make_dist(
    site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """An installed distribution as importlib.metadata sees one: a .dist-info folder and its modules."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    write(info / "entry_points.txt", f"[{reward_binding.ENTRY_POINT_GROUP}]\n{lines}")
    for module, source in modules.items():
        write(site / f"{module}.py", source)


SHOUT = '''
    """Fast-installed test plugin."""


    def shout(completions, min_ratio=0.5, **kwargs):
        """1.0 for mostly capitals, else 0.0."""
        return [float(sum(c.isupper() for c in t) >= min_ratio * len(t)) for t in completions]
'''


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """A distribution `acme-fast` registering `fast_shout` (and a plugin that fails to import), on sys.path."""
    site = tmp_path / "site"
    make_dist(
        site,
        "acme-fast",
        "0.1",
        {"fast_shout": "acme_fast:shout", "fast_broken": "acme_fast_broken:score"},
        {"acme_fast": SHOUT, "acme_fast_broken": "import json\nraise RuntimeError('no API key')\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in ("acme_fast", "acme_fast_broken"):
        sys.modules.pop(module, None)


# ---- every way to name a reward ---------------------------------------------------------------------------


def test_builtin_resolves_first_with_its_args_and_columns():
    bound = bind("accuracy", args={"answer_column": "solution"})
    assert (bound.name, bound.spec.origin, bound.columns) == ("accuracy", "built-in", ["solution"])
    assert scoring.RewardCall(bound).score(["Q"], ["7"], {"solution": ["7"]}) == ([1.0], 0)


def test_installed_entry_point_resolves_with_its_distribution(fake_plugin):
    bound = bind("fast_shout", args={"min_ratio": 1.0})
    assert (bound.name, bound.spec.origin, bound.spec.source) == (
        "fast_shout",
        "plugin (acme-fast 0.1)",
        "acme_fast:shout",
    )
    assert call("fast_shout", ["HEY", "Hey"], args={"min_ratio": 1.0}) == ([1.0, 0.0], 0)


def test_builtin_wins_over_an_entry_point_of_the_same_name(tmp_path, monkeypatch, cli):
    make_dist(tmp_path, "acme-clash", "2.0", {"accuracy": "acme_clash:accuracy"}, {"acme_clash": SHOUT})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reward_binding.find("accuracy").origin == "built-in"
    assert reward_binding.REWARDS.installed()["accuracy"].dist == "acme-clash 2.0"
    listing = cli("rewards", "ls").stdout
    assert (
        "accuracy  from acme-clash 2.0 (acme_clash:accuracy): unused, the built-in 'accuracy' comes first; "
        "name it as acme_clash:accuracy instead" in listing
    )


def test_file_plugin_relative_to_the_recipe(tiny_recipe, tmp_path):
    write(
        tmp_path / "lib" / "my_rewards.py",
        '''
        def brevity(completions, limit=10):
            """1.0 up to `limit` characters."""
            return [1.0 if len(c) <= limit else 0.0 for c in completions]
        ''',
    )
    recipe = load_recipe(
        tiny_recipe({"rewards": [{"name": "lib/my_rewards.py:brevity", "args": {"limit": 2}}]})
    )
    assert recipe.rewards[0].name == f"{tmp_path / 'lib' / 'my_rewards.py'}:brevity"
    (bound,) = reward_binding.bind_all(recipe.rewards)
    assert (bound.name, bound.spec.origin, bound.columns) == ("brevity", "file", [])
    # A function that takes neither prompts nor **kwargs still gets called as TRL calls rewards.
    trl_kwargs = {"completion_ids": [[1], [2]], "trainer_state": None, "log_extra": print}
    assert scoring.RewardCall(bound)(["Q", "Q"], ["12", "123"], **trl_kwargs) == [1.0, 0.0]


def test_module_plugin_with_a_dotted_attribute(tmp_path, monkeypatch):
    write(tmp_path / "acme_pkg" / "__init__.py", "")
    write(
        tmp_path / "acme_pkg" / "scoring.py",
        """
        class Tone:
            @staticmethod
            def polite(completions, **kwargs):
                return [float("please" in c) for c in completions]
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    bound = bind("acme_pkg.scoring:Tone.polite")
    assert (bound.name, bound.spec.origin) == ("Tone.polite", "module")
    assert scoring.RewardCall(bound).score(["Q"] * 2, ["please", "now"], {}) == ([1.0, 0.0], 0)


def test_module_in_the_current_directory_resolves_as_with_python_m(tmp_path, monkeypatch):
    write(
        tmp_path / "cwd_only_rewards.py", "def one(completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    assert call("cwd_only_rewards:one", ["a"]) == ([1.0], 0)
    assert sys.path[-1] == str(tmp_path)  # appended: an installed module of the same name would win
    sys.modules.pop("cwd_only_rewards")


@pytest.mark.parametrize("name", ["model:acme/reward-model", "LOCAL_DIR"])
def test_reward_models(name, tmp_path, monkeypatch):
    write(tmp_path / "rm" / "config.json", "{}")
    monkeypatch.chdir(tmp_path)
    name = name.replace("LOCAL_DIR", "rm")
    bound = bind(name)
    assert bound.spec.origin == "reward model" and bound.fn is None and bound.columns == []
    assert bound.model_path == name.removeprefix("model:")
    assert bound.name == Path(bound.model_path).name
    assert bind_error(name, args={"x": 1}) == f"rewards[0] ({name}): a reward model takes no args"


def test_validate_a_recipe_naming_every_kind(cli, tiny_recipe, tmp_path, fake_plugin, monkeypatch):
    write(tmp_path / "mine.py", "def brevity(completions, **kw):\n    return [1.0] * len(completions)\n")
    write(tmp_path / "pkg_kinds" / "__init__.py", "def tone(prompts, completions, **kw):\n    return [0.0]\n")
    write(tmp_path / "rm" / "config.json", "{}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rewards = [
        {"name": "accuracy"},
        {"name": "fast_shout", "args": {"min_ratio": 0.8}, "on_error": "skip"},
        {"name": "./mine.py:brevity", "weight": 0.1},
        {"name": "pkg_kinds:tone", "timeout": 5},
        {"name": "model:./rm"},
    ]
    result = cli("validate", tiny_recipe({"rewards": rewards}))
    assert result.exit_code == 0, result.output
    assert result.stdout == "tiny.yaml: ok (grpo, 5 rewards)\n"
    bound = reward_binding.bind_all(load_recipe(tmp_path / "tiny.yaml").rewards)
    assert [(b.name, b.spec.origin) for b in bound] == [
        ("accuracy", "built-in"),
        ("fast_shout", "plugin (acme-fast 0.1)"),
        ("brevity", "file"),
        ("tone", "module"),
        ("rm", "reward model"),
    ]


# ---- a user's own module named `rewards` ---------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rewards.py", "rewards/__init__.py"])
def test_a_users_own_rewards_module_and_the_builtins_both_resolve(
    layout, cli, tiny_recipe, tmp_path, monkeypatch
):
    project = tmp_path / "project"
    write(project / layout, "def my_fn(completions, **kwargs):\n    return [0.5] * len(completions)\n")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "rewards", raising=False)
    path = tiny_recipe({"rewards": [{"name": "rewards:my_fn"}, {"name": "accuracy"}, {"name": "closeness"}]})
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    bound = reward_binding.bind_all(load_recipe(path).rewards)
    assert [(b.name, b.spec.origin) for b in bound] == [
        ("my_fn", "module"),
        ("accuracy", "built-in"),
        ("closeness", "built-in"),
    ]
    assert scoring.RewardCall(bound[0]).score(["Q"], ["x"], {}) == ([0.5], 0)
    assert scoring.RewardCall(bound[1]).score(["Q"], ["4"], {"answer": ["4"]}) == ([1.0], 0)
    assert Path(importlib.import_module("rewards").__file__) == project / layout
    accuracy_module = sys.modules[bound[1].fn.__module__]
    assert Path(accuracy_module.__file__) == REWARDS_DIR / "accuracy.py"
    assert accuracy_module.__name__ == "grpo_cli.builtin_rewards.accuracy"
    sys.modules.pop("rewards", None)


def test_a_users_rewards_module_in_a_fresh_process(tmp_path):
    """`python -m` puts the project first on sys.path, so its `rewards.py` is `rewards`; the built-ins still load."""
    project = tmp_path / "project"
    write(project / "rewards.py", "def my_fn(completions, **kwargs):\n    return [0.5] * len(completions)\n")
    command = [sys.executable, "-m", "grpo_cli", "rewards", "test", "-r", "rewards:my_fn", "-r", "accuracy"]
    command += ["--column", "answer=5", "-c", "5"]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    assert rows == [["'5'", "0.5", "1", "1.5", "+0.000"]]


# ---- columns ------------------------------------------------------------------------------------------


def test_columns_of_functions_classes_and_declared_ones(tmp_path):
    write(
        tmp_path / "cols.py",
        """
        def reads(prompts, completions, answer, difficulty=None, hint_column="hint", **kwargs):
            return [0.0] * len(completions)


        class Judge:
            required_columns = "rubric"  # a single name, not its letters

            def __init__(self, reference_column="reference", strict=False):
                self._reference = reference_column  # under another name: the argument still counts

            def __call__(self, prompts, completions, topic, **kwargs):
                return [0.0] * len(completions)
        """,
    )
    assert bind(f"{tmp_path}/cols.py:reads").columns == ["answer", "hint"]
    assert bind(f"{tmp_path}/cols.py:reads", args={"hint_column": "tip", "answer": "4"}).columns == ["tip"]
    assert bind(f"{tmp_path}/cols.py:Judge").columns == ["topic", "rubric", "reference"]
    assert bind(f"{tmp_path}/cols.py:Judge", args={"reference_column": "gold"}).columns == [
        "topic",
        "rubric",
        "gold",
    ]


def test_validate_checks_the_columns_of_a_class_plugin(cli, tiny_recipe, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"question": "1+1=", "answer": "2"}\n' * 4)  # a whole GRPO batch
    write(
        tmp_path / "judge.py",
        """
        class Judge:
            required_columns = ["rubric"]

            def __init__(self, reference_column="reference"):
                self.reference_column = reference_column

            def __call__(self, prompts, completions, **columns):
                return [0.0] * len(completions)
        """,
    )
    changes = {
        "dataset": {"generate": None, "source": "d.jsonl", "eval_size": None},
        "rewards": [{"name": "./judge.py:Judge", "args": {"reference_column": "gold"}}],
    }
    result = cli("validate", tiny_recipe(changes))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: tiny.yaml: 2 problems:",
        f"  - rewards[0] ({tmp_path}/judge.py:Judge) reads column 'gold', which the dataset does not have; "
        "columns: question, answer (point it at another column in its args)",
        f"  - rewards[0] ({tmp_path}/judge.py:Judge) reads column 'rubric', which the dataset does not have; "
        "columns: question, answer (point it at another column in its args)",
    ]
    changes["rewards"][0]["args"]["reference_column"] = "answer"
    changes["dataset"]["source"] = "d2.jsonl"
    (tmp_path / "d2.jsonl").write_text('{"question": "1+1=", "answer": "2", "rubric": "exact"}\n' * 4)
    assert cli("validate", tiny_recipe(changes)).exit_code == 0


# ---- mistakes before training -------------------------------------------------------------------------


def test_unknown_name_lists_close_matches_and_where_it_looked():
    assert bind_error("acuracy") == (
        "rewards[0]: unknown reward 'acuracy' (did you mean 'accuracy' or 'reasoned_accuracy'?); looked in the "
        f"built-ins ({REWARDS_DIR}) and the installed plugins (entry-point group 'grpo_cli.rewards'); other names "
        "are path/to/file.py:function, package.module:function or model:<Hub id or dir>. "
        f"Available: {', '.join(sorted(reward_binding.REWARDS.available()))} (see `grpo-cli rewards ls`)"
    )


def test_unknown_name_lists_installed_plugins_too(fake_plugin):
    assert "Available: accuracy, closeness" in bind_error("fast_shuot")
    assert "fast_shout" in bind_error("fast_shuot").split("Available: ")[1]
    assert bind_error("fast_shuot").startswith(
        "rewards[0]: unknown reward 'fast_shuot' (did you mean 'fast_shout' or 'fast_broken'?)"
    )


def test_names_that_look_like_paths_say_how_to_write_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "rm").mkdir(parents=True)
    assert bind_error("my_rewards.py") == (
        "rewards[0]: unknown reward 'my_rewards.py'; for a function in a file write my_rewards.py:function"
    )
    assert bind_error("models/rm") == (
        "rewards[0]: unknown reward 'models/rm'; models/rm is a directory without config.json: a reward model "
        "directory holds the model's config.json and weights"
    )
    assert (
        bind_error("x.py:")
        == "rewards[0]: reward 'x.py:': write path/to/file.py:function or package.module:function"
    )


def test_file_errors(tmp_path):
    write(tmp_path / "mine.py", "def brevity(completions):\n    return []\n\nclass Helper:\n    pass\n")
    assert (
        bind_error(f"{tmp_path}/missing.py:f") == f"rewards[0]: reward file not found: {tmp_path}/missing.py"
    )
    assert bind_error(f"{tmp_path}/mine.py:brevty") == (
        f"rewards[0]: {tmp_path}/mine.py has no 'brevty' (did you mean 'brevity'?); it defines: Helper, brevity"
    )


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (
            "import json\nimport acme_not_installed\n",
            "(line 2): ModuleNotFoundError: No module named 'acme_not_installed'",
        ),
        ("x = 1\n\ndef f(:\n    pass\n", "(line 3): SyntaxError: invalid syntax"),
        ("import math\nRATE = 1 / 0\n", "(line 2): ZeroDivisionError: division by zero"),
    ],
    ids=["missing dependency", "syntax error", "error at import"],
)
def test_file_or_module_that_fails_to_import_gives_path_line_and_error(source, error, tmp_path, monkeypatch):
    path = write(tmp_path / "broken.py", source)
    path_and_line = error.replace("(line", f"({path}, line")
    assert bind_error(f"{path}:f") == f"rewards[0]: reward file failed to import {path_and_line}"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bind_error("broken:f") == f"rewards[0]: reward module 'broken' failed to import {path_and_line}"
    sys.modules.pop("broken", None)


def test_module_errors(tmp_path, monkeypatch):
    write(tmp_path / "acme_pkg2" / "__init__.py", "")
    write(tmp_path / "acme_pkg2" / "inner.py", "from . import helpers\n")
    write(tmp_path / "acme_pkg2" / "helpers.py", "import os\n\nraise KeyError('ACME_TOKEN')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert bind_error("acme_nowhere.scoring:f") == (
        "rewards[0]: reward module 'acme_nowhere.scoring' not found: no module named 'acme_nowhere' is installed or "
        f"on sys.path, nor in the current directory ({tmp_path}); for a file, write path/to/file.py:f"
    )
    assert bind_error("acme_pkg2.nope:f") == (
        "rewards[0]: reward module 'acme_pkg2.nope' not found: no module named 'acme_pkg2.nope' is installed or "
        f"on sys.path, nor in the current directory ({tmp_path}); for a file, write path/to/file.py:f"
    )
    assert bind_error("acme_pkg2.inner:f") == (
        "rewards[0]: reward module 'acme_pkg2.inner' failed to import "
        f"({tmp_path}/acme_pkg2/helpers.py, line 3): KeyError: 'ACME_TOKEN'"
    )
    write(tmp_path / "acme_simple.py", "def score(completions, **kw):\n    return [0.0] * len(completions)\n")
    assert bind_error("acme_simple:scor") == (
        "rewards[0]: module 'acme_simple' has no 'scor' (did you mean 'score'?); it defines: score"
    )
    for module in ("acme_pkg2", "acme_pkg2.inner", "acme_pkg2.helpers", "acme_simple"):
        sys.modules.pop(module, None)


def test_installed_plugin_that_fails_to_import(fake_plugin, cli):
    message = (
        "reward plugin 'fast_broken' (acme-fast, acme_fast_broken:score) failed to import "
        f"({fake_plugin / 'acme_fast_broken.py'}, line 2): RuntimeError: no API key"
    )
    assert bind_error("fast_broken") == f"rewards[0]: {message}"
    listing = cli("rewards", "ls")
    assert listing.exit_code == 0
    assert (
        f"fast_broken  from acme-fast 0.1 (acme_fast_broken:score)\n    cannot be used: {message}\n"
        in listing.stdout
    )
    assert (
        "fast_shout  from acme-fast 0.1 (acme_fast:shout)\n    1.0 for mostly capitals, else 0.0.\n"
        in listing.stdout
    )


ARGS = '''
class Judge:
    """Scores with a rubric."""

    def __init__(self, rubric, threshold=0.5):
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.rubric = rubric

    def __call__(self, prompts, completions, **kwargs):
        return [0.0] * len(completions)


def brevity(completions, limit=10, **kwargs):
    return [0.0] * len(completions)


def no_completions(prompts, answer):
    return [0.0] * len(prompts)


NOT_CALLABLE = 3
'''


@pytest.mark.parametrize(
    ("attr", "args", "message"),
    [
        ("brevity", {"limt": 5}, "unknown argument 'limt' (did you mean 'limit'?); its arguments: limit=10"),
        ("brevity", {"prompts": 5}, "unknown argument 'prompts'; its arguments: limit=10"),
        ("Judge", {}, "missing argument 'rubric': set it in args; its arguments: rubric, threshold=0.5"),
        (
            "Judge",
            {"rubric": "x", "treshold": 2},
            "unknown argument 'treshold' (did you mean 'threshold'?); its arguments: rubric, threshold=0.5",
        ),
        (
            "Judge",
            {"rubric": "x", "threshold": 2},
            "args {'rubric': 'x', 'threshold': 2} rejected: ValueError: threshold must be in (0, 1), got 2",
        ),
        (
            "no_completions",
            {},
            "it takes no `completions` parameter; a reward is fn(prompts, completions, **columns) -> list[float | None]",
        ),
        ("NOT_CALLABLE", {}, "3 is not callable; a reward is a function or a class"),
    ],
)
def test_wrong_or_missing_argument_is_named(attr, args, message, tmp_path):
    name = f"{write(tmp_path / 'args.py', ARGS)}:{attr}"
    assert bind_error(name, args=args) == f"rewards[0] ({name}): {message}"


def test_builtin_arguments_are_checked_when_bound():
    assert bind_error("length") == (
        "rewards[0] (length): args {} rejected: ValueError: length_reward needs exactly one of `target` "
        "(reward closeness to this many characters) or `max_length` (penalise approaching this many "
        "characters); got target=None, max_length=None"
    )
    assert bind("length", args={"target": 5}).name == "length"


def test_bind_all_reports_every_problem_and_duplicate_names():
    entries = [RewardEntry(name="acuracy"), RewardEntry(name="format"), RewardEntry(name="format")]
    with pytest.raises(UserError) as info:
        reward_binding.bind_all(entries)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("rewards[0]: unknown reward 'acuracy'")
    assert info.value.problems[1] == "rewards: format listed twice; metrics need distinct names"


# ---- a real plugin distribution, installed with pip ---------------------------------------------------


@pytest.fixture(scope="module")
def acme_installed(tmp_path_factory):
    """tests/plugin_fixture pip-installed into a folder of its own (the source copied: builds write into it)."""
    tmp = tmp_path_factory.mktemp("acme")
    source = shutil.copytree(FIXTURE_DIST, tmp / "src")
    offline = importlib.util.find_spec("setuptools") is not None  # else pip fetches it to build in isolation
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp / "site")]
    command += ["--no-index", "--no-build-isolation"] if offline else []
    subprocess.run([*command, str(source)], check=True, capture_output=True, timeout=300)
    return tmp / "site"


@pytest.fixture
def acme(acme_installed, monkeypatch):
    monkeypatch.syspath_prepend(str(acme_installed))
    yield acme_installed
    sys.modules.pop("acme_rewards", None)


@pytest.mark.slow
def test_pip_installed_plugin_is_found_through_its_entry_points(acme):
    specs = reward_binding.REWARDS.installed()
    assert {n: (s.dist, s.source) for n, s in specs.items() if s.dist.startswith("acme-rewards")} == {
        "shouting": ("acme-rewards 0.1.0", "acme_rewards:shouting_reward"),
        "on_topic": ("acme-rewards 0.1.0", "acme_rewards:OnTopic"),
    }
    assert call("shouting", ["HELLO", "Hello", "hello"], args={"min_ratio": 0.5}) == ([1.0, 0.0, 0.0], 0)
    on_topic = bind("on_topic", args={"topic_column": "subject", "bonus": 0.5})
    assert on_topic.columns == ["subject"]
    assert scoring.RewardCall(on_topic).score(
        ["Q"] * 2, ["I like Cats", "dogs"], {"subject": ["cats"] * 2}
    ) == (
        [1.5, 0.0],
        0,
    )


@pytest.mark.slow
def test_pip_installed_plugin_in_a_recipe_validate_and_rewards_ls(acme, cli, tiny_recipe, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"question": "Say hi", "answer": "HI", "topic": "greetings"}\n' * 4)
    changes = {
        "dataset": {"generate": None, "source": "d.jsonl", "eval_size": None},
        "rewards": [
            {"name": "shouting", "weight": 0.5, "args": {"min_ratio": 0.8}},
            {"name": "on_topic", "args": {"topic_column": "subject"}},
        ],
    }
    result = cli("validate", tiny_recipe(changes))
    # One problem is one line (errors.ConfigError), since h3-validate.
    assert result.stderr.splitlines() == [
        "error: tiny.yaml: rewards[1] (on_topic) reads column 'subject', which the dataset does not have; columns: "
        "question, answer, topic (point it at another column in its args)"
    ]
    changes["rewards"][1]["args"] = {}
    assert cli("validate", tiny_recipe(changes)).stdout == "tiny.yaml: ok (grpo, 2 rewards)\n"
    listing = cli("rewards", "ls").stdout
    assert (
        "shouting  from acme-rewards 0.1.0 (acme_rewards:shouting_reward)\n"
        "    1.0 when at least `min_ratio` of the letters are capitals, else 0.0.\n"
        "    args: min_ratio=0.5\n" in listing
    )
    assert (
        "on_topic  from acme-rewards 0.1.0 (acme_rewards:OnTopic)\n"
        "    1.0 when the completion mentions the row's topic (case-insensitive), else 0.0.\n"
        "    args: topic_column='topic', bonus=0.0\n"
        "    reads columns: topic\n" in listing
    )


@pytest.mark.slow
def test_pip_installed_plugin_in_the_real_command(acme_installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(acme_installed)}
    grpo_cli = [sys.executable, "-m", "grpo_cli"]
    listing = subprocess.run(
        [*grpo_cli, "rewards", "ls"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert "shouting  from acme-rewards 0.1.0 (acme_rewards:shouting_reward)\n" in listing.stdout
    scored = subprocess.run(
        [*grpo_cli, "rewards", "test", "-r", "shouting", "-c", "HEY", "-c", "hey"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    rows = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in scored.stdout.splitlines()
        if line.startswith("│")
    ]
    assert rows == [["'HEY'", "1", "1", "+0.707"], ["'hey'", "0", "0", "-0.707"]]


def test_plugins_installed_where_the_tests_run_stay_out_of_them(tmp_path):
    """conftest's isolated_entry_points: with another reward plugin installed, the tests that list plugins pass."""
    site = tmp_path / "environment"
    make_dist(site, "aardvark-rewards", "1.0", {"aaa": "aardvark:aaa"}, {"aardvark": SHOUT})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(site)])}
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from grpo_cli.reward_binding import REWARDS; print(json.dumps(sorted(REWARDS.installed())))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Installed, as a user's environment would have it (beside any reward plugin the environment itself holds).
    assert "aaa" in json.loads(listed.stdout), listed.stderr
    test = f"{__file__}::test_unknown_name_lists_installed_plugins_too"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed" in result.stdout, result.stdout


# ---- the generic registry ----------------------------------------------------------------------------------


def test_entry_points_are_read_once_until_sys_path_changes(fake_plugin, monkeypatch, tmp_path):
    import importlib.metadata

    calls = []
    patched = importlib.metadata.entry_points  # conftest's isolated view

    def counting(**params):
        calls.append(params.get("group"))
        return patched(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    registry.clear_caches()
    for _ in range(3):
        assert "fast_shout" in reward_binding.REWARDS.installed()
    assert calls == [reward_binding.ENTRY_POINT_GROUP]
    make_dist(tmp_path / "later", "acme-later", "1.0", {"later": "acme_later:shout"}, {"acme_later": SHOUT})
    monkeypatch.syspath_prepend(
        str(tmp_path / "later")
    )  # installed while the process runs: seen, as imports see it
    assert "later" in reward_binding.REWARDS.installed() and len(calls) == 2


def test_available_lists_are_capped_with_the_total():
    def builtins():
        return {f"r{i:02}": registry.PluginSpec(f"r{i:02}", "built-in", lambda: None) for i in range(25)}

    tools = registry.Registry("tool", "grpo_cli.tools", builtins, "tools/", "path/to/file.py:function", "ls")
    with pytest.raises(UserError) as raised:
        tools.find("zzz")
    shown = ", ".join(f"r{i:02}" for i in range(registry.LISTED))
    assert str(raised.value) == (
        "unknown tool 'zzz'; looked in the built-ins (tools/) and the installed "
        "plugins (entry-point group 'grpo_cli.tools'); other names are path/to/file.py:function. "
        f"Available: {shown}, ... (25 total) (see `ls`)"
    )
