"""PythonReward: loading a TRL-style reward function by MODULE:FUNCTION, the arguments of
both formats, and every way a call can fail."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rewards.python_reward import PythonReward
from search.errors import RewardTimeout, RewardUnavailable
from tests.unit import python_rewards_example as example

MOD = "tests.unit.python_rewards_example"
CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "Say hi"},
]
Loader = Callable[..., PythonReward]


@pytest.fixture
async def load() -> AsyncIterator[Loader]:
    made: list[PythonReward] = []

    def make(name: str, **kw: Any) -> PythonReward:
        made.append(PythonReward.load(f"{MOD}:{name}", **kw))
        return made[-1]

    yield make
    for reward in made:
        await reward.aclose()


@pytest.fixture
def released() -> Iterator[None]:
    """Lets every hung ``hang`` call return when the test ends."""
    example.RELEASE.clear()
    yield
    example.RELEASE.set()


# -- loading -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("no_colon", "use MODULE:FUNCTION"),
        (f"{MOD}:", "use MODULE:FUNCTION"),
        (":length_reward", "use MODULE:FUNCTION"),
        ("tests.unit.no_such_module:f", "No module named 'tests.unit.no_such_module'"),
        ("no_such_package_xyz.rewards:f", "No module named 'no_such_package_xyz'"),
        (f"{MOD}:nope", "has no 'nope'"),
        (f"{MOD}:NOT_CALLABLE", "NOT_CALLABLE is a int, not a function"),
        (f"{MOD}:wrong_names", "does not take prompts and completions as keyword"),
        (f"{MOD}:positional_only", "does not take prompts and completions as keyword"),
        (f"{MOD}:needs_answer", "requires answer"),
        (f"{MOD}:async_reward", "an async function"),
    ],
)
def test_load_errors(target: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        PythonReward.load(target)
    assert target in str(info.value)


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory is a fresh one that is not on sys.path (as under the
    `alignserve` console script); its modules are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(source)
    importlib.invalidate_caches()


async def test_current_directory_is_importable(in_tmp_dir: Path) -> None:
    write_module(
        in_tmp_dir,
        "my_rewards_here",
        "def score(prompts, completions, **kw):\n    return [0.25 for _ in completions]\n",
    )
    reward = PythonReward.load("my_rewards_here:score")
    assert str(in_tmp_dir) in sys.path
    assert await reward.score(CONV, ["a", "b"]) == [0.25, 0.25]
    await reward.aclose()


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (
            "raise RuntimeError('bad config')\n",
            "importing broken_rewards raised RuntimeError: bad config",
        ),
        (
            "import not_installed_dependency_xyz\n",
            "importing broken_rewards raised ModuleNotFoundError: No module named "
            "'not_installed_dependency_xyz'",
        ),
        ("def score(:\n", "importing broken_rewards raised SyntaxError"),
    ],
)
def test_import_error_is_wrapped(in_tmp_dir: Path, source: str, match: str) -> None:
    write_module(in_tmp_dir, "broken_rewards", source)
    with pytest.raises(ValueError, match=match) as info:
        PythonReward.load("broken_rewards:score")
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"fmt": "chatml"}, "format 'chatml'"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_options(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PythonReward.load(f"{MOD}:length_reward", **kw)


# -- arguments ---------------------------------------------------------------------------


async def test_conversational_arguments(load: Loader) -> None:
    reward = load("recorder")
    assert reward.bounds is None
    assert await reward.score(CONV, ["a", "bb"]) == [0.0, 0.0]
    call = example.LAST_CALL
    assert call["prompts"] == [CONV, CONV]
    assert call["prompts"][0] is not CONV  # a copy: the function cannot edit the search's
    assert call["completions"] == [
        [{"role": "assistant", "content": "a"}],
        [{"role": "assistant", "content": "bb"}],
    ]
    assert call["partial"] == [False, False]
    assert set(call) == {"prompts", "completions", "partial"}
    # Its own worker thread, not the event loop's default executor.
    assert example.LAST_THREAD[0].startswith("python-reward-")


async def test_text_arguments_are_the_last_user_message(load: Loader) -> None:
    await load("recorder", fmt="text").score(CONV, ["a", "bb"], partial=True)
    assert example.LAST_CALL == {
        "prompts": ["Say hi", "Say hi"],
        "completions": ["a", "bb"],
        "partial": [True, True],
    }


@pytest.mark.parametrize("fmt", ["conversational", "text"])
async def test_good_function_in_both_formats(load: Loader, fmt: str) -> None:
    assert await load("length_reward", fmt=fmt).score(CONV, ["a", "bbb"]) == [1.0, 3.0]


async def test_partial_passed_when_named(load: Loader) -> None:
    reward = load("partial_flag")
    assert await reward.score(CONV, ["a", "b"], partial=True) == [0.5, 0.5]
    assert await reward.score(CONV, ["a", "b"]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_kwargs", [1.0, 1.0]),  # no partial= passed (it would raise TypeError)
        ("keyword_only", [2.0, 2.0]),  # a tuple is fine
        ("SCORER", [3.0, 3.0]),  # a callable object
        ("array_reward", [0.0, 1.0]),  # tolist(), as numpy arrays and tensors have
    ],
)
async def test_other_shapes(load: Loader, name: str, expected: list[float]) -> None:
    result = await load(name).score(CONV, ["a", "b"], partial=True)
    assert result == expected
    assert all(type(v) is float for v in result)


async def test_empty_responses_do_not_call(load: Loader) -> None:
    example.LAST_CALL.clear()
    assert await load("recorder").score(CONV, []) == []
    assert example.LAST_CALL == {}


# -- failures ----------------------------------------------------------------------------


async def test_exception_is_reward_unavailable(
    load: Loader, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="rewards.python_reward"),
        pytest.raises(RewardUnavailable) as info,
    ):
        await load("raises").score(CONV, ["a"])
    assert info.value.status_code == 503
    assert info.value.reason == "exception"
    # M9: the function's message may hold anything it had at hand; only the log gets it.
    assert (
        info.value.message == f"python reward {MOD}:raises raised ValueError (see the server log)"
    )
    assert caplog.records[-1].exc_info is not None  # the traceback, for the function's author
    assert "the answer key is missing" in caplog.text


async def test_system_exit_in_the_function_is_its_exception(load: Loader) -> None:
    with pytest.raises(RewardUnavailable) as info:
        await load("exits").score(CONV, ["a"])
    assert info.value.reason == "exception"
    assert "raised SystemExit" in info.value.message


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("one_value", "returned 1 values for 2 responses"),
        ("bools", "value 0 is True (bool), not a real number"),
        ("nones", "value 0 is None"),
        ("strings", "value 0 is '1.0' (str)"),
        ("a_float", "returned a float, not a list of floats"),
    ],
)
async def test_bad_values(load: Loader, name: str, detail: str) -> None:
    with pytest.raises(RewardUnavailable) as info:
        await load(name).score(CONV, ["a", "b"])
    assert info.value.reason == "bad_value"
    assert info.value.message.startswith(f"python reward {MOD}:{name} ")
    assert detail in info.value.message


@pytest.mark.parametrize(
    ("name", "detail"), [("nan_reward", "value 1 is nan"), ("inf_reward", "value 0 is inf")]
)
async def test_m2_non_finite_values(load: Loader, name: str, detail: str) -> None:
    with pytest.raises(RewardUnavailable) as info:
        await load(name).score(CONV, ["a", "b"])
    assert info.value.reason == "non_finite"
    assert detail in info.value.message


async def test_timeout(load: Loader, released: None) -> None:
    reward = load("hang", timeout_s=0.2)
    with pytest.raises(RewardTimeout) as info:
        await reward.score(CONV, ["a"])
    assert info.value.status_code == 504
    assert info.value.message == f"python reward {MOD}:hang did not return within 0.2 s"


async def test_all_workers_hung_then_released(load: Loader, released: None) -> None:
    reward = load("hang", timeout_s=0.2, workers=1)
    with pytest.raises(RewardTimeout):
        await reward.score(CONV, ["a"])
    # The one worker is still in the first call: the next one waits in the queue and
    # times out too, and the message says why.
    with pytest.raises(RewardTimeout) as info:
        await reward.score(CONV, ["b"])
    assert "all 1 of its worker threads are busy" in info.value.message
    example.RELEASE.set()
    reward.timeout_s = 5.0
    assert await reward.score(CONV, ["c"]) == [1.0]
