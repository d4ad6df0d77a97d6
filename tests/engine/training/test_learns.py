"""Evidence that training learns, through the CLI, on the embedded model.

A patient's notes keep mentioning a made-up dog name. ``phyassist train patient`` trains an
adapter; ``phyassist adapter list`` shows v1; ``phyassist adapter export`` writes a PEFT
folder; loaded with ``PeftModel.from_pretrained`` its answer-only loss on those notes is far
below the base model's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from engine.training.data import build_training_data
from engine.training.metrics import completion_loss
from tests.support import REPO

# ~1-4 min on 2 CPU cores (24 optimizer steps on the 135M model): not in the default run.
pytestmark = [pytest.mark.model, pytest.mark.slow]

DOG = "Zorblax"


def _cli(*args: str, passphrase: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PHYASSIST_PASSPHRASE=passphrase)
    return subprocess.run(
        [sys.executable, "-m", "phyassist_tui", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def test_cli_trains_an_adapter_that_learns_the_patients_notes(
    embedded_settings, embedded_model_dir, open_vault, make_patient, passphrase, tmp_path
):

    with open_vault(embedded_settings) as store:
        pid = make_patient(store, DOG, 3, edits=False)
        patient = store.load_patient(pid)

    trained = _cli("train", "patient", pid[:10], "--preference", "none", passphrase=passphrase)
    assert trained.returncode == 0, trained.stderr[-2000:]
    lines = trained.stdout.splitlines()
    assert any(line.startswith("[sft] step 1/") for line in lines), trained.stdout
    assert lines[-1].startswith("Saved adapter v1"), trained.stdout

    listed = _cli("adapter", "list", pid, passphrase=passphrase)
    assert listed.returncode == 0, listed.stderr
    assert "* v1" in listed.stdout and "notes 3" in listed.stdout

    out = tmp_path / "exported"
    refused = _cli("adapter", "export", pid, "--out", str(out), passphrase=passphrase)
    assert refused.returncode != 0 and not out.exists()  # no terminal, no --yes: no export
    exported = _cli("adapter", "export", pid, "--out", str(out), "--yes", passphrase=passphrase)
    assert exported.returncode == 0, exported.stderr
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    examples = build_training_data(patient).sft
    before = completion_loss(base, tokenizer, examples)
    tuned = PeftModel.from_pretrained(base, out)
    after = completion_loss(tuned, tokenizer, examples)
    print(
        f"answer loss base {before:.3f} (ppl {math.exp(before):.1f}) -> "
        f"adapter {after:.3f} (ppl {math.exp(after):.1f})"
    )
    assert after <= 0.7 * before, (before, after)
