"""The environment is the locked one, and a broken library pairing stops at start with the fix named."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from headshots.versions import FIX_DRIFT, Floor, library_floors, lock_mismatches, read_pins, runtime_version_problems


def test_installed_environment_matches_the_lock():
    mismatches = lock_mismatches()
    assert not mismatches, "the environment drifted from the lock:\n  " + "\n  ".join(mismatches) + f"\nfix: {FIX_DRIFT}"


def test_a_drifted_or_missing_package_is_named_with_both_versions(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(textwrap.dedent("""\
        # made by uv
        transformers==5.23.0
            # via headshots (pyproject.toml)
        peft==0.21.2 ; python_full_version >= '3.11'
        not-a-real-package==1.0
        windows-only==2.0 ; sys_platform == 'win32'
        """))
    installed = {"transformers": "5.24.0", "peft": "0.21.2"}
    assert lock_mismatches([lock], installed.get) == [
        "transformers: 5.24.0 installed, requirements.lock pins 5.23.0",
        "not-a-real-package: not installed, requirements.lock pins 1.0",
    ]


def test_lock_pins_every_direct_dependency_exactly():
    from headshots.versions import LOCK_FILES

    pinned = {pin.package for lock in LOCK_FILES for pin in read_pins(lock.read_text(), lock.name)}
    for package in ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes",
                    "datasets", "omegaconf", "wandb", "facenet-pytorch", "uv"):
        assert package in pinned, f"{package} is not pinned in the lock files"


def test_floors_come_from_the_libraries_own_code():
    import transformers.integrations.peft as transformers_peft

    floors = library_floors()
    assert Floor("peft", transformers_peft.MIN_PEFT_VERSION, "transformers",
                 "to put LoRA on the text encoders and to load adapters into them") in floors
    assert {f.declared_by for f in floors} == {"transformers", "diffusers"}
    assert runtime_version_problems(floors) == [], "the locked environment must satisfy its own libraries"


def test_transformers_5_24_with_peft_0_21_is_refused_with_the_versions_named():
    # transformers 5.24 declares MIN_PEFT_VERSION = "0.22.0"; this is that environment.
    installed = {"transformers": "5.24.0", "peft": "0.21.2", "diffusers": "0.42.1"}
    floors = [Floor("peft", "0.22.0", "transformers", "to put LoRA on the text encoders"),
              Floor("peft", "0.17.0", "diffusers", "for its LoRA support")]
    assert runtime_version_problems(floors, installed.get) == [
        "peft 0.21.2 is installed, but transformers 5.24.0 needs peft >= 0.22.0 to put LoRA on the text encoders"
    ]
    assert runtime_version_problems(floors, {"transformers": "5.24.0", "diffusers": "0.42.1"}.get) == [
        "peft is not installed, but transformers 5.24.0 needs peft >= 0.22.0 to put LoRA on the text encoders",
        "peft is not installed, but diffusers 0.42.1 needs peft >= 0.17.0 for its LoRA support",
    ]


# Imports bitsandbytes as a CPU with AVX512-BF16 would (this machine may lack it): its functional module is
# patched as it loads, before the CPU backend asks it, and the optional kernel then fails to load offline.
BNB_IMPORT_ON_AN_AVX512_BF16_CPU = """
import importlib.abc, importlib.machinery, sys

class ReportAvx512Bf16(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, ReportAvx512Bf16())
if sys.argv[1] == "quiet":
    from headshots.logs import setup_logging
    setup_logging()
else:
    import logging
    logging.basicConfig()
import bitsandbytes
"""


@pytest.mark.parametrize("mode, shown", [("plain", True), ("quiet", False)])
def test_bitsandbytes_4bit_cpu_kernel_notice_is_silenced(mode, shown):
    result = subprocess.run([sys.executable, "-c", BNB_IMPORT_ON_AN_AVX512_BF16_CPU, mode],
                            check=False, capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert ("gemm_4bit_forward" in result.stderr) == shown, result.stderr


def test_a_first_setup_on_a_disk_too_small_stops_before_installing_with_the_space_named(tmp_path):
    """pip ran out of space half-way through a first `make setup` (after uninstalling part of the environment); the
    check before it names what is needed and what is free. A setup over an installed torch is not asked."""
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "setup_space.py"
    venv = tmp_path / ".venv"
    venv.mkdir()
    refused = subprocess.run([sys.executable, str(script), str(venv), "--needed-gib", "1e9"], check=False, capture_output=True, text=True)
    assert refused.returncode == 1
    assert f"needs about 1e+09 GiB free for {venv}" in refused.stderr and "GiB free." in refused.stderr
    assert "Traceback" not in refused.stderr
    (venv / "lib/python3.11/site-packages/torch").mkdir(parents=True)
    (venv / "lib/python3.11/site-packages/torch/__init__.py").touch()
    assert subprocess.run([sys.executable, str(script), str(venv), "--needed-gib", "1e9"], check=False).returncode == 0
