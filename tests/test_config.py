"""Config layering (defaults < file < flags) and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from codefoundry.config import StageConfig, load_config
from codefoundry.errors import ConfigError


class Optim(StageConfig):
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)


class Example(StageConfig):
    name: str = "default"
    steps: int = 10
    workers: int | None = None
    optim: Optim = Optim()


def test_defaults_work() -> None:
    cfg = load_config(Example)
    assert (cfg.name, cfg.steps, cfg.optim.lr) == ("default", 10, 3e-4)


def test_file_overrides_defaults_and_flags_override_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: from-file\nsteps: 20\noptim:\n  lr: 0.001\n")
    from_file = load_config(Example, f)
    assert (from_file.name, from_file.steps, from_file.optim.lr, from_file.optim.betas) == (
        "from-file", 20, 0.001, (0.9, 0.95))
    both = load_config(Example, f, {"steps": 30, "name": None, "optim.lr": 0.5})
    assert (both.name, both.steps, both.optim.lr, both.optim.betas) == ("from-file", 30, 0.5, (0.9, 0.95))


def test_json_config(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"steps": 7}')
    assert load_config(Example, f).steps == 7


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("")
    assert load_config(Example, f) == Example()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("stepz: 3\n", "key 'stepz': unknown key"),
        ("optim:\n  lr: fast\n", "key 'optim.lr'"),
        ("optim:\n  momentum: 0.9\n", "key 'optim.momentum': unknown key"),
        ("steps: 1.5\n", "key 'steps'"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(Example, f)
    assert fragment in str(err.value) and str(f) in str(err.value)


def test_flag_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"command-line flags: key 'steps'.*given: 'ten'"):
        load_config(Example, None, {"steps": "ten"})


def test_assignment_is_validated() -> None:
    cfg = Example()
    with pytest.raises(ValueError):
        cfg.steps = "many"  # type: ignore[assignment]
