"""Parameter counts of every model config (conf/model/*.yaml), computed on the meta device.

    python bench/param_counts.py
"""

from pathlib import Path

import yaml

from vla.models.summary import parameter_counts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    print(f"| config | model id | vision | projector | LLM | total |\n|---|---|---:|---:|---:|---:|")
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("_target_") != "vla.models.build_vla":
            continue  # e.g. model=openvla: sizes come from the checkpoint
        c = parameter_counts(**{k: v for k, v in cfg.items() if k != "_target_"})
        print(f"| {path.stem} | {cfg['model_id']} | {c['vision']:,} | {c['projector']:,} | {c['llm']:,} | {c['total']:,} |")


if __name__ == "__main__":
    main()
