"""scripts/gpu_check.sh: the prepared GPU check (run with --dry-run on the CPU: see its header)."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


def test_the_gpu_check_script_is_valid_bash_with_a_dry_run():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    text = SCRIPT.read_text()
    assert (
        "--dry-run" in text
        and "OBLIQUE_TEST_DEVICE" in text
        and "--device cuda" not in text.split("DEVICE=")[0]
    )
