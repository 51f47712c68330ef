"""What every pipeline job does first: its stderr and every library's logs go to its rule's log."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_jobs_library_logs_reach_its_log_file(tmp_path):
    # A poison's rounds are logged by poisonlab.poisons.* through `logging`; nothing else configures it.
    job = textwrap.dedent("""
        import logging, sys
        from poisonlab.job import start_job
        start_job(sys.argv[1])
        logging.getLogger("poisonlab.poisons.error_minimizing").info("em round 1: surrogate accuracy 0.25")
        print("to stderr", file=sys.stderr)
    """)
    log = tmp_path / "job.log"
    subprocess.run([sys.executable, "-c", job, str(log)], check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0].endswith("poisonlab.poisons.error_minimizing em round 1: surrogate accuracy 0.25")
    assert lines[1] == "to stderr"
