"""Our EVOS beside the official EVOS code (github zwx-open/EVOS-INR) in the reference setting.

    python scripts/bench_vs_official.py prepare                       # the 256x256 PNG both codes read
    python scripts/bench_vs_official.py run --strategy evos --out R.json   # one run of ours, one thread
    python scripts/bench_vs_official.py table R1.json R2.json ...     # side-by-side table from run files

Setting (``--preset reference`` of bench_image.py): DIV2K 00 at 256x256, SIREN width 128 depth 5,
r = 0.5 constant, 2000 iterations, seed 3407, PSNR every ``log_every`` iterations. Both codes
read the same 8-bit PNG (``prepare``: our Lanczos resize of the shared 512x512 image, rounded),
because the official code reads an image file as it is.

The official code is not part of this project and no script here fetches or builds it; its run
files (same JSON fields: step, psnr, train_time, train_cpu_time) come from running it with the
same settings, and ``table`` reads them like ours. Times cover what both trainers time: sampling,
forward, loss, backward and optimizer step; evaluation is outside. CPU time (this process plus
finished child processes, e.g. torch.compile's C++ compiler) is the main clock because other
processes share this machine; wall time is kept beside it.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import numpy as np
import torch
import tyro
from PIL import Image

from evos_nerf.core import EvolutionConfig
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.signal import load_image
from evos_nerf.image.trainer import ImageFitter
from evos_nerf.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "div2k_evos" / "00.png"
DEFAULT_PNG = Path("/tmp/evos-data/00_256.png")


@dataclass
class Prepare:
    """Write the 256x256 8-bit PNG that both codes fit."""

    source: Path = DEFAULT_SOURCE
    out: Path = DEFAULT_PNG
    resolution: int = 256


@dataclass
class Run:
    """One run of our trainer, one torch thread, history written as JSON."""

    out: Path
    strategy: Literal["evos", "full", "uniform"] = "evos"
    image: Path = DEFAULT_PNG
    iterations: int = 2000
    log_every: int = 20
    seed: int = 3407
    width: int = 128
    depth: int = 5
    ratio: float = 0.5
    compile: Literal["auto", "on", "off"] = "auto"
    threads: int = 1


@dataclass
class Table:
    """Side-by-side table of run files (ours and the official code's)."""

    runs: tyro.conf.Positional[List[Path]]
    out: Path = ROOT / "benchmarks" / "image_vs_official.md"
    notes: Optional[Path] = None
    """Markdown appended under the table (how the official code was run)."""


def prepare(args: Prepare) -> None:
    signal = load_image(args.source, args.resolution)
    pixels = np.round(signal.rgb.numpy() * 255.0).astype(np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(args.out)
    print(f"wrote {args.out} ({pixels.shape[1]}x{pixels.shape[0]})")


def run(args: Run) -> None:
    torch.set_num_threads(args.threads)
    signal = load_image(args.image)
    evos = EvolutionConfig(ratio=args.ratio, ratio_schedule="constant")
    backbone = BackboneConfig(kind="siren", width=args.width, depth=args.depth, compile=args.compile)
    fitter = ImageFitter(signal, args.strategy, args.iterations, evos, backbone, args.seed, "cpu")
    started = time.perf_counter()
    history = [
        {"step": e.step, "psnr": e.psnr, "ssim": e.ssim, "train_time": e.train_time, "train_cpu_time": e.train_cpu_time}
        for e in fitter.run(args.iterations, args.log_every)
    ]
    write_json(
        args.out,
        {
            "code": "ours",
            "strategy": args.strategy,
            "compiled": fitter.forward.compiled,
            "compile_fallback": fitter.forward.fallback_reason,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "settings": {k: str(v) for k, v in vars(args).items()},
            "total_wall_s": time.perf_counter() - started,
            "history": history,
        },
    )
    final = history[-1]
    print(f"{args.strategy}: PSNR {final['psnr']:.3f} dB, CPU {final['train_cpu_time']:.1f} s, wall {final['train_time']:.1f} s")


# -- table -----------------------------------------------------------------------------------------


def time_to(history: List[Dict[str, Any]], target: float, clock: str) -> Optional[Dict[str, float]]:
    """Clock time and step of the first logged step whose PSNR reaches ``target`` (None if never)."""
    for entry in history:
        if entry["psnr"] >= target:
            return {"step": entry["step"], "s": entry[clock]}
    return None


def per_step(history: List[Dict[str, Any]], clock: str, after: int = 100) -> float:
    """Mean seconds per iteration after step ``after`` (compilation and warm-up excluded)."""
    start = next(e for e in history if e["step"] >= after)
    end = history[-1]
    return (end[clock] - start[clock]) / max(1, end["step"] - start["step"])


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    full_final = {
        code: statistics.mean(r["history"][-1]["psnr"] for r in runs if r["code"] == code and r["strategy"] == "full")
        for code in {r["code"] for r in runs if r["strategy"] == "full"}
    }
    common = max(full_final.values()) if full_final else None
    rows = []
    for r in runs:
        h = r["history"]
        row = {
            "code": r["code"],
            "strategy": r["strategy"],
            "label": r.get("label", ""),
            "final_psnr": h[-1]["psnr"],
            "steps": h[-1]["step"],
            "cpu_s": h[-1]["train_cpu_time"],
            "wall_s": h[-1]["train_time"],
            "cpu_per_step": per_step(h, "train_cpu_time"),
            "wall_per_step": per_step(h, "train_time"),
            "compiled": r.get("compiled"),
        }
        if r["strategy"] != "full":
            own = full_final.get(r["code"])
            for name, target in (("own", own), ("common", common)):
                for clock in ("train_cpu_time", "train_time"):
                    row[f"ttt_{name}_{clock}"] = None if target is None else time_to(h, target, clock)
        rows.append(row)
    return {"full_final_psnr": full_final, "common_target": common, "rows": rows}


def _reach(value: Optional[Dict[str, float]]) -> str:
    return "not reached" if value is None else f"{value['s']:.1f} s (it {value['step']})"


def markdown(summary: Dict[str, Any]) -> str:
    rows = summary["rows"]
    lines = [
        "| run | code | strategy | final PSNR | CPU s/step (after it 100) | wall s/step | CPU total (s) | "
        "to own full's final PSNR, CPU | to common target, CPU | to common target, wall |",
        "|" + "---|" * 10,
    ]
    for i, r in enumerate(rows, 1):
        own = _reach(r.get("ttt_own_train_cpu_time")) if r["strategy"] != "full" else "-"
        common = _reach(r.get("ttt_common_train_cpu_time")) if r["strategy"] != "full" else "-"
        common_wall = _reach(r.get("ttt_common_train_time")) if r["strategy"] != "full" else "-"
        code = r["code"] + (" (compiled)" if r.get("compiled") else "")
        lines.append(
            f"| {i}{(' ' + r['label']) if r['label'] else ''} | {code} | {r['strategy']} | {r['final_psnr']:.2f} | "
            f"{r['cpu_per_step']:.4f} | {r['wall_per_step']:.4f} | {r['cpu_s']:.1f} | {own} | {common} | {common_wall} |"
        )
    if summary["common_target"] is None:
        lines += ["", "No full-batch run given: no target PSNR."]
    else:
        finals = ", ".join(f"{code} {psnr:.2f} dB" for code, psnr in sorted(summary["full_final_psnr"].items()))
        lines += ["", f"Full-batch final PSNR: {finals}; common target (the higher): {summary['common_target']:.2f} dB."]
    return "\n".join(lines) + "\n"


def table(args: Table) -> None:
    runs = [json.loads(Path(p).read_text()) for p in args.runs]
    summary = summarise(runs)
    text = markdown(summary)
    if args.notes is not None:
        text += "\n" + args.notes.read_text()
    write_text(args.out, text)
    write_json(args.out.with_suffix(".json"), {"summary": summary, "runs": runs})
    print(text)
    print(f"wrote {args.out} and .json")


def main(command: Union[Prepare, Run, Table]) -> None:
    if isinstance(command, Prepare):
        prepare(command)
    elif isinstance(command, Run):
        run(command)
    else:
        table(command)


if __name__ == "__main__":
    main(tyro.extras.subcommand_cli_from_dict({"prepare": Prepare, "run": Run, "table": Table}))
