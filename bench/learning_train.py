"""Ten notes through ``TrainingRun`` (the real worker, domain merged, SFT + DPO); prints JSON.

The goal figure of issue 17 (10-note training <= 60 s on 2 cores) on the product path: the
subprocess, imports, load, domain merge, training, sealing, storing. The notes are the
learning bench's counselor policy applied to a fixed draft of ten real CounselChat questions,
so no generation is needed. ``worker_cpu_s`` (all threads) is the figure that survives a
shared box; ``OVR`` (JSON) passes training overrides, e.g. the recipe before issue 17's CPU
change: ``OVR='{"lora_layers": null, "learning_rate": 2e-4, "warmup_ratio": 0.03,
"preference_learning_rate": 5e-5}'``.

    python bench/learning_train.py
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench.learning as L
from engine.records import AnalysisDraft, Item, Note
from engine.settings import ModelSettings, StoreSettings, load_settings
from engine.training.runner import TrainingRun
from engine.vault.store import Store

os.environ.setdefault("PHYASSIST_CACHE_DIR", str(load_settings().cache_dir))
tmp = tempfile.mkdtemp(prefix="learn-ten-")
os.environ["PHYASSIST_HOME"] = tmp
settings = load_settings(
    model=ModelSettings(device="cpu", domain_adapter="auto"), store=StoreSettings(scrypt_log2_n=10)
)
store = Store.create(settings.vault_dir, L.PASSPHRASE, settings=settings)
pol = L.CounselorPolicy("depression")
draft = AnalysisDraft(
    symptom_type=Item(text="Lack of motivation"),
    reasons=[
        Item(text="Lack of motivation (no energy or interest)."),
        Item(text="Lack of motivation due to lack of work or responsibilities."),
    ],
    advice=[
        Item(text="Help find purpose in life by finding something meaningful to do."),
        Item(text="Seek professional help from a mental health counselor."),
    ],
)
pid = store.create_patient("ten").id
for q in L.sessions_for("depression", 10, settings.limits.max_statement_chars):
    store.add_note(pid, Note(question=q, analysis=pol.edit(draft.model_copy(deep=True), q)))
load0 = Path("/proc/loadavg").read_text().split()[:3]
run = TrainingRun(store, pid, settings, overrides=json.loads(os.environ.get("OVR", "{}")) or None)
t = time.perf_counter()
for _ in run.events():
    pass
s = run.summary
print(
    json.dumps(
        {
            "wall_s": round(time.perf_counter() - t, 1),
            "load_before": load0,
            "load_after": Path("/proc/loadavg").read_text().split()[:3],
            "worker_cpu_s": s.get("cpu_s"),
            "timings": s.get("timings"),
            "steps": s.get("steps"),
            "preference_steps": s.get("preference_steps"),
            "tokens": s.get("tokens"),
            "final_loss": s.get("final_loss"),
            "preference_loss": s.get("preference_loss"),
            "cpu_threads": s.get("cpu_threads"),
            "peak_rss_mb_worker": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
            "lora_layers": (s.get("hyperparameters") or {}).get("lora_layers"),
            "lr": (s.get("hyperparameters") or {}).get("learning_rate"),
        },
        indent=1,
    )
)
