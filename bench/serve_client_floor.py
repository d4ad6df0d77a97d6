"""What one counselor's process holds on the server backend, against a torch-free floor.

Each figure is a fresh process (RSS and PSS read after its imports, ``gc`` collected):

* ``remote_client``: what ``backend.kind = "openai"`` imports today (``engine.inference.remote``:
  the :class:`~engine.inference.assistant.Assistant` it extends, the constraints, generation
  and adapter code, which import torch and transformers) plus the model's tokenizer read as it
  reads it (``engine.model.llm.load_tokenizer``);
* ``tokenizer_only``: the same process without torch or transformers: httpx, numpy, jinja2,
  ``tokenizers`` and ``safetensors``, the engine's torch-free modules (prompts, record fitting,
  parsing, risk rules and classifier, the HTTP client) and the same ``tokenizer.json`` read by
  the ``tokenizers`` library. Nothing here is a working client: it is the floor a client
  without torch would stand on (bench/RESULTS.md says what such a client needs).
* ``python``: the interpreter with the settings model (pydantic) alone: every probe has it.

    python -m bench.serve_client_floor
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBES = {
    "python": "",
    "tokenizer_only": """
import httpx, numpy, jinja2, tokenizers, safetensors
import engine.inference.prompts, engine.inference.analysis, engine.inference.context
import engine.inference.prompt_assembly, engine.records, engine.trust.risk
import engine.inference.openai_client, engine.model.adapters
from engine.trust import risk_classifier
risk_classifier.classifier()
directory = Path(sys.argv[1])
tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
tokenizer.encode("I can't sleep. 我最近总是失眠。")
assert "torch" not in sys.modules and "transformers" not in sys.modules
""",
    "remote_client": """
import engine.inference.remote
from engine.trust import risk_classifier
risk_classifier.classifier()
from engine.model.llm import load_tokenizer
tokenizer = load_tokenizer(settings)
tokenizer.encode("I can't sleep. 我最近总是失眠。")
""",
}

PRELUDE = """
import gc, json, sys
from pathlib import Path
from engine.settings import Settings
settings = Settings(model={"device": "cpu", "domain_adapter": None})
"""

REPORT = """
gc.collect()
import psutil
info = psutil.Process().memory_full_info()
print(json.dumps({"rss_mib": round(info.rss / 2**20), "pss_mib": round(info.pss / 2**20),
                  "torch": "torch" in sys.modules}))
"""


def main() -> None:
    from engine.model.llm import model_directory
    from engine.settings import Settings

    directory = model_directory(Settings(model={"device": "cpu", "domain_adapter": None}))
    root = Path(__file__).resolve().parent.parent
    out: dict[str, object] = {"bench": "serve_client_floor", "model_dir": str(directory)}
    for name, body in PROBES.items():
        code = PRELUDE + body + REPORT
        run = subprocess.run(
            [sys.executable, "-c", code, str(directory)],
            capture_output=True,
            text=True,
            cwd=root,
            check=True,
        )
        out[name] = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
