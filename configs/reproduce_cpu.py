"""The paper's comparison with a seed spread, at CPU scale (on 2 cores with the demo's corpus
already built: 32 min for the teacher and four students before the fallback evaluations were
added; since then the two gated students' stages took 30 min while another run shared the
cores, see the README):

    python reproduce.py --config configs/reproduce_cpu.py --workdir runs/reproduce

The demo's pipeline (configs/paper_cpu.py: teacher tiny.en, its corpus, W8A8, outliers on the
vendored real speech) with every student trained once per seed, without and with gated
attention, so that the report's "Spread over seeds" table gives Table 1 and Table 2 as mean ±
standard deviation over seeds. A seed is the student's initialisation (its gates) and its data
order. Stopped, the same command resumes from what WORKDIR holds.
"""

import importlib.util
from pathlib import Path

import ml_collections

CONFIGS = Path(__file__).resolve().parent


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    opts = dict(kv.split("=", 1) for kv in arg.split(",") if kv)
    if set(opts) - {"seeds", "steps"}:
        unknown = sorted(set(opts) - {"seeds", "steps"})
        raise ValueError(f"unknown config argument(s) {unknown}; known: seeds, steps")
    spec = importlib.util.spec_from_file_location("paper_cpu", CONFIGS / "paper_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(f"steps={opts['steps']}" if "steps" in opts else "")
    c.seeds = tuple(int(s) for s in opts.get("seeds", "0:1").split(":"))
    return c
