"""Seeded fuzzing of the config loader: mutated YAML configs load or raise ConfigError, nothing else.

Each case starts from the quickstart recipe or the tests' tiny config and applies a few random
structural mutations (deleted or renamed keys, swapped types, huge numbers, NaN, nested lists,
scalars in place of sections) or text mutations (random bytes, cut text, aliases, deep brackets).
Every case must finish fast, every error must be a short ConfigError, and memory must stay flat.
"""

from __future__ import annotations

import math
import random
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinyconv.config import Config, ConfigError, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]
CASES = 400

SWAPS: list[Any] = [
    None, "", "x", "hey tiny", 0, 1, -1, 2**31, 10**30, -(10**30), 1.5, -0.0, 1e308, 1e-308, math.nan, math.inf,
    -math.inf, True, False, [], {}, [1, [2, [3]]], {"a": {"b": [1]}}, [None], ["yes", "no"], "1e3", ".inf",
    "x" * 5000, [0.5] * 50, {"wav2vec2": "[-1]"},
]


def bases() -> list[dict[str, Any]]:
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.recipes import recipe_path

    quick = yaml.safe_load(recipe_path("quickstart").read_text())
    tiny = config_to_dict(load_config(None, TINY_OVERRIDES))
    return [quick, tiny]


def random_value(rng: random.Random) -> Any:
    value = rng.choice(SWAPS)
    if rng.random() < 0.2:
        value = [value] * rng.randint(0, 4)
    if rng.random() < 0.1:
        value = {rng.choice(["x", "epochs", "name"]): value}
    return value


def mutate_tree(raw: dict[str, Any], rng: random.Random) -> Any:
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for _ in range(rng.randint(1, 4)):
        if not isinstance(raw, dict) or not raw:
            return random_value(rng)
        section = rng.choice(list(raw))
        values = raw[section]
        op = rng.random()
        if op < 0.05:
            del raw[section]
        elif op < 0.1:
            raw[section + rng.choice(["s", "_", ""]) + "x"] = raw.pop(section)
        elif op < 0.15:
            raw[section] = random_value(rng)
        elif isinstance(values, dict) and values:
            key = rng.choice(list(values))
            op = rng.random()
            if op < 0.15:
                del values[key]
            elif op < 0.3:
                values[key[: rng.randint(0, len(key))] + rng.choice(["", "x", "_", "ss"])] = values.pop(key)
            elif op < 0.5 and isinstance(values[key], (int, float)) and not isinstance(values[key], bool):
                values[key] = values[key] * rng.choice([-1, 0, 10**9, 1e300, -1e-9, math.nan])
            elif op < 0.6 and isinstance(values[key], list) and values[key]:
                values[key][rng.randrange(len(values[key]))] = random_value(rng)
            else:
                values[key] = random_value(rng)
    return raw


def mutate_text(text: str, rng: random.Random) -> bytes:
    data = text.encode()
    op = rng.randrange(7)
    if op == 0:  # random bytes somewhere
        i = rng.randrange(len(data) + 1)
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i:]
    if op == 1:  # cut short
        return data[: rng.randrange(len(data) + 1)]
    if op == 2:  # an alias to an anchor
        return b"x: &a [1, 2]\n" + data + b"\ntrain: {epochs: *a}\n"
    if op == 3:  # deep brackets
        depth = rng.choice([40, 500, 5000])
        return data + b"\nqat: {epochs: " + b"[" * depth + b"]" * depth + b"}\n"
    if op == 4:  # duplicated or shuffled lines
        lines = data.splitlines(keepends=True)
        rng.shuffle(lines)
        return b"".join(lines)
    if op == 5:  # a character flipped
        if not data:
            return data
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.choice(b":-[]{}&*!%@`'\"#|> \t\n")]) + data[i + 1:]
    return data + b"\n" + rng.choice([b"!!python/object:os.system {}", b"? [a]\n: 1", b"%YAML 1.1\n---", b"---\n---",
                                       b"train: !!binary notbase64", b"data: !!set {a, b}", b"\x00"])


def dump(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


def test_mutated_configs_load_or_raise_config_error_only(tmp_path: Path) -> None:
    rng = random.Random(1313)
    base_trees = bases()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcomes = {"loaded": 0, "refused": 0}
    slowest = 0.0
    path = tmp_path / "fuzz.yaml"
    for case in range(CASES):
        tree = mutate_tree(rng.choice(base_trees), rng)
        data = mutate_text(dump(tree), rng) if rng.random() < 0.4 else dump(tree).encode()
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            outcomes["refused"] += 1
            message = str(exc)
            assert message and len(message) < 1000, f"case {case}: message of {len(message)} chars"
        except Exception as exc:  # noqa: BLE001 (the property under test)
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc!s:.300}\n--- input ---\n{data[:2000]!r}")
        else:
            outcomes["loaded"] += 1
            assert isinstance(cfg, Config)
        slowest = max(slowest, time.perf_counter() - t0)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert slowest < 1.0, f"slowest case took {slowest:.2f} s"
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"
    # The mutations must exercise both paths, or the test proves nothing.
    assert outcomes["refused"] > CASES // 2 and outcomes["loaded"] > 5, outcomes


def test_overrides_fuzz_raise_config_error_only() -> None:
    rng = random.Random(7)
    keys = [f"{s}.{k}" for s, sec in config_to_dict(Config()).items() for k in sec]
    texts = ["[", "]", "{a: 1", "*x", "&a 1", "!!float x", "1e999", "-.inf", ".nan", "9" * 5000, "[" * 3000,
             "\x00", "'unterminated", "yes", "0x1F", "0o17", "1_000", "~", "null", "[1, [2]]", "{}", "- a\n- b"]
    for case in range(300):
        key = rng.choice(keys)
        if rng.random() < 0.2:
            key = key.replace(".", rng.choice(["", "..", ".x.", "_"]), 1)
        item = f"{key}={rng.choice(texts)}" if rng.random() < 0.9 else rng.choice(texts)
        try:
            load_config(None, [item])
        except ConfigError as exc:
            assert len(str(exc)) < 1000, item
        except Exception as exc:  # noqa: BLE001 (the property under test)
            pytest.fail(f"case {case}: --set {item!r:.200}: {type(exc).__name__}: {exc!s:.300}")
