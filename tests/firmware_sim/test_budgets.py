from pathlib import Path

import pytest

from tinyconv.firmware_sim.budgets import BudgetError, list_budgets, load_budget

EXPECTED = {"nrf52840": ("cortex-m4", 64), "stm32l4r5": ("cortex-m4", 120), "stm32f746": ("cortex-m7", 216),
            "esp32s3": ("xtensa-lx7", 240), "rp2040": ("cortex-m0plus", 133), "stm32g0b1": ("cortex-m0plus", 64)}


def test_shipped_profiles_load() -> None:
    assert set(EXPECTED) <= set(list_budgets())
    for name, (core, mhz) in EXPECTED.items():
        b = load_budget(name)
        assert (b.core, b.clock_mhz) == (core, mhz)
        assert 0 < b.ram_available_bytes < b.sram_bytes


def test_unknown_budget_suggests() -> None:
    with pytest.raises(BudgetError, match="unknown MCU budget 'esp32s2'.*did you mean 'esp32s3'"):
        load_budget("esp32s2")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    return p


def test_user_profile_by_path(tmp_path: Path) -> None:
    p = _write(tmp_path, "core: cortex-m33\nclock_mhz: 150\nsram_bytes: 100000\nflash_bytes: 500000\n")
    b = load_budget(str(p))
    assert b.name == "mine" and b.kernels == "reference"


@pytest.mark.parametrize(("text", "message"), [
    ("core: cortex-m4\nclock_mhz: 64\nsram_bytes: 1\nflash_bytes: 1\nsram_byte: 3\n",
     "unknown key 'sram_byte' \\(did you mean 'sram_bytes'\\?\\)"),
    ("core: cortex-m5\nclock_mhz: 64\nsram_bytes: 1\nflash_bytes: 1\n", "core 'cortex-m5' is unknown"),
    ("core: cortex-m4\nclock_mhz: 64\nsram_bytes: 1\nflash_bytes: 1\nkernels: cmsis\n",
     "kernels 'cmsis' is unknown \\(did you mean 'cmsis-nn'\\?\\)"),
    ("core: cortex-m4\nclock_mhz: 64\nsram_bytes: '1'\nflash_bytes: 1\n", "sram_bytes must be int"),
    ("core: cortex-m4\nclock_mhz: 64\nsram_bytes: 1\n", "missing required keys \\['flash_bytes'\\]"),
    ("core: cortex-m4\nclock_mhz: 64\nsram_bytes: 1\nflash_bytes: 1\napp_reserved_fraction: 1.5\n",
     "app_reserved_fraction must be in"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("core: [\n", "invalid YAML"),
])
def test_bad_profiles(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        load_budget(str(_write(tmp_path, text)))
