"""Per-chapter markers: ``pytest -m ch04`` runs one chapter's unit, check and exercise tests.

A test file is marked by the chapter whose module it tests (table below); exercise and check
tests parametrised by chapter ("04_matrix_sensing") are marked by their parameter.
"""

from __future__ import annotations

import re

import pytest

FILE_CHAPTERS = {
    "test_lora": ["ch01"], "test_peft_parity": ["ch01"], "test_finetune": ["ch01"], "test_rslora": ["ch01"],
    "test_checks": ["ch01"], "test_deep_linear": ["ch02"], "test_hierarchy": ["ch02"], "test_ssm": ["ch03"],
    "test_sensing": ["ch04"], "test_sweep": ["ch05", "ch06"], "test_optim": ["ch05", "ch06"],
    "test_checks_05_06": ["ch05", "ch06"], "test_fit": ["ch02", "ch04", "ch05", "ch06"], "test_rf": ["ch07"],
    "test_transformer": ["ch08"], "test_forgetting": ["ch08"], "test_spectra_intruders": ["ch08"],
    "test_beyond_kernels": ["ch09"], "test_hermite": ["ch09"], "test_variants": ["ch10"],
    "test_galore": ["ch10"], "test_dora": ["ch01", "ch10"], "test_spectra": ["ch01", "ch08"],
    "test_devices_ch1_ch8": ["ch01", "ch08"], "test_devices_ch2_ch3_ch9": ["ch02", "ch03", "ch09"],
    "test_devices_ch4_ch7": ["ch04", "ch05", "ch06", "ch07"], "test_bad_inputs_ch2": ["ch02"],
    "test_bad_inputs_ch5": ["ch05"], "test_bad_inputs_ch4_7": ["ch04", "ch05", "ch06", "ch07"],
    "test_rf_mechanisms": ["ch07"], "test_sensing_mechanisms": ["ch04"], "test_ssm_claims": ["ch03"],
    "test_deep_linear_claims": ["ch02"],
}
CHAPTER_MARKERS = [f"ch{n:02d}" for n in range(1, 11)]


def pytest_configure(config: pytest.Config) -> None:
    for marker in CHAPTER_MARKERS:
        config.addinivalue_line("markers", f"{marker}: tests of chapter {int(marker[2:])}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in FILE_CHAPTERS.get(item.path.stem, []):
            item.add_marker(marker)
        match = re.search(r"\[(\d\d)_", item.name)  # parametrised by chapter: "...[04_matrix_sensing]"
        if match and f"ch{match.group(1)}" in CHAPTER_MARKERS:
            item.add_marker(f"ch{match.group(1)}")
