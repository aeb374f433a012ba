"""Images per second of SD 1.5 and SDXL on a GPU: plain diffusers vs Dreambot's engine with each speed
option, batch 1 and 4, peak GPU memory, and the whole bot vs the bare loop, in one command.

    python bench/gpu.py                      # on a CUDA GPU: about 7.5 minutes (estimated)
    python bench/gpu.py --smoke              # on any CPU, tiny models: checks that every row runs
    python bench/gpu.py --plan               # the rows it would run, with their estimated seconds
        [--model ID_OR_PATH] [--sdxl-model ID_OR_PATH] [--preview-decoder ID_OR_PATH]
        [--sdxl-preview-decoder ID_OR_PATH] [--steps 20] [--repeats 1] [--budget 450] [--only NAME[,NAME]]
        [--device cuda] [--jobs 10]

Models: an SD 1.5-architecture model at 512x512 and an SDXL-architecture one at 1024x1024, with random
weights built in code (bench/full_size.py: the real shapes, so the real speed and memory; the pictures
are noise), saved as diffusers folders that both sides load with `from_pretrained`. `--model` and
`--sdxl-model` put a real model (a hub id or a diffusers folder) in their place.

Rows per model, each in a fresh process (no compile cache, memory peak or cuDNN state carried from one
to the next), each batch size warmed up with one untimed call of a few steps, then timed over a few calls
(batch 1: 3 calls for SD 1.5, 2 for SDXL; batch 4: 2 and 1; times `--repeats`), one picture per
`num_images_per_prompt`/`num_images`:
  diffusers          DiffusionPipeline.from_pretrained(dtype=float16 on CUDA).to(device), its default
                     scheduler and attention; no safety check, no PNG
  engine             engine.pipeline.Engine.load + generate_batch with the engine's defaults (SDPA,
                     channels-last on CUDA, DPM++ 2M, the safety check, PNG encoding of every picture)
  then the engine with one setting changed: attention-classic (SD_ATTENTION=classic), channels-last
  (SD_CHANNELS_LAST flipped from its default), compile (SD_COMPILE=1: its warm-up at load is shown apart
  and not counted), vae-tiling (SD_VAE_TILE_PIXELS=1: always), vae-slicing (SD_VAE_SLICE_PIXELS=1:
  always), preview-decoder (the given AutoencoderTiny, else one of TAESD's architecture with random
  weights, with a preview asked for at every step).
Then bench/throughput.py with the SD 1.5 model: the whole bot vs the bare diffusers loop.

`--budget` seconds: rows run in order of interest; one whose estimate (scaled by what the rows before it
took) would not fit is skipped, and the output says so. The last line is the results as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness import PROMPTS, clean_environment, machine, thread_settings

REPO = Path(__file__).resolve().parent.parent
MARK = "@@gpu-bench "  # a worker's result line, among whatever the libraries print
MODELS = {"sd15": "SD 1.5", "sdxl": "SDXL"}
PREFERRED_BATCH = 4
PREVIEW_SETTING = {"sd15": "sd_preview_decoder", "sdxl": "sdxl_preview_decoder"}

# Seconds each step takes, process start to end, (on an H100/H200-class GPU, in --smoke on a 2-core CPU):
# the GPU's are estimates, not measured yet (docs/benchmarks.md, section 8). A compile row's is mostly
# inductor compiling at load, and again for batch 4 if it must.
ESTIMATES = {
    "sd15": {"prepare": (20, 4), "diffusers": (14, 3), "engine": (15, 3), "attention-classic": (16, 3),
             "channels-last": (15, 3), "vae-tiling": (16, 3), "vae-slicing": (15, 3), "preview-decoder": (15, 3),
             "compile": (150, 10)},
    "sdxl": {"prepare": (30, 4), "diffusers": (26, 3), "engine": (28, 3), "attention-classic": (32, 3),
             "channels-last": (28, 3), "vae-tiling": (32, 3), "vae-slicing": (30, 3), "preview-decoder": (28, 3),
             "compile": (240, 10)},
    "": {"throughput": (60, 55)},
}
OPTIONS = ("attention-classic", "channels-last", "vae-tiling", "vae-slicing", "preview-decoder")
# The order rows run in: what matters most first, so that a short budget drops the least useful; each
# model's compile row after its cheap ones, since its time is the least certain.
ORDER = (
    [("sd15", "diffusers"), ("sd15", "engine"), ("sdxl", "diffusers"), ("sdxl", "engine"), ("", "throughput")]
    + [("sd15", name) for name in (*OPTIONS, "compile")] + [("sdxl", name) for name in (*OPTIONS, "compile")]
)


@dataclass
class Step:
    """One thing the script does: build a model (prepare), one row of a model's table, or the throughput run."""

    model: str  # "sd15", "sdxl", or "" for the throughput run
    name: str
    label: str
    estimate: float
    settings: dict = field(default_factory=dict)  # engine settings changed from the defaults

    @property
    def key(self) -> str:
        return f"{self.model}:{self.name}" if self.model else self.name


def plan(args: argparse.Namespace) -> list[Step]:
    """The steps of this run, in the order they run: a prepare step for each model a row needs, then the rows."""
    cuda = args.device.startswith("cuda")
    rows = [step for model, name in ORDER if selected(args.only, model, name)
            for step in [row(args, model, name, cuda)]]
    needed = [model for model in MODELS if any(s.model == model or (model == "sd15" and s.name == "throughput")
                                               for s in rows)]
    prepares = [Step(model, "prepare", f"build {MODELS[model]}: "
                     + ("a given model, and a random preview decoder" if source_given(args, model)
                        else "random weights, saved as a diffusers folder"),
                     estimate(args, model, "prepare")) for model in needed]
    return prepares + rows


def row(args: argparse.Namespace, model: str, name: str, cuda: bool) -> Step:
    channels_last = "off" if cuda else "on"  # the default is on for CUDA only: the row flips it
    if name == "preview-decoder":  # the folder is filled in by the prepare step when no decoder is given
        decoder = args.preview_decoder if model == "sd15" else args.sdxl_preview_decoder
        label, settings = (f"engine, preview decoder ({'given' if decoder else 'random TAESD'})",
                           {PREVIEW_SETTING[model]: decoder})
    else:
        label, settings = {
            "diffusers": ("plain diffusers default", {}),
            "engine": ("Dreambot engine, defaults", {}),
            "attention-classic": ("engine, SD_ATTENTION=classic", {"sd_attention": "classic"}),
            "channels-last": (f"engine, SD_CHANNELS_LAST={channels_last}", {"sd_channels_last": channels_last}),
            "compile": ("engine, SD_COMPILE=1", {"sd_compile": True}),
            "vae-tiling": ("engine, VAE tiling always", {"sd_vae_tile_pixels": 1}),
            "vae-slicing": ("engine, VAE slicing always", {"sd_vae_slice_pixels": 1}),
            "throughput": ("whole bot vs bare loop (bench/throughput.py)", {}),
        }[name]
    return Step(model, name, label, estimate(args, model, name), settings)


def estimate(args: argparse.Namespace, model: str, name: str) -> float:
    gpu, smoke = ESTIMATES[model][name]
    if args.smoke:
        return smoke
    scale = args.steps / 20 * args.repeats if name not in ("prepare", "throughput") else 1
    return gpu * max(scale, 0.5)


def selected(only: list[str], model: str, name: str) -> bool:
    """--only: a row's full name (sd15:compile), a row name for both models (compile), or a model (sdxl)."""
    return not only or any(choice in (f"{model}:{name}", name, model) for choice in only if choice)


def source_given(args: argparse.Namespace, model: str) -> bool:
    return bool(args.model if model == "sd15" else args.sdxl_model)


class Budget:
    """Seconds left, and estimates scaled by how long this machine took for the rows so far."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.scale: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def expected(self, step: Step) -> float:
        return step.estimate * self.scale.get(step.model, 1.0)

    def learn(self, step: Step, seconds: float) -> None:
        if step.name in ("diffusers", "engine"):  # the plainest rows: how this machine compares to the estimate
            self.scale[step.model] = seconds / step.estimate


# --- the parent: plans, starts the workers, prints --------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny random models on the CPU, 64x64, 2 steps, batch 1 and 2: checks the plumbing")
    parser.add_argument("--plan", action="store_true", help="print the planned rows and their estimates, and exit")
    parser.add_argument("--only", type=lambda text: [t.strip() for t in text.split(",")], default=[],
                        metavar="NAME[,NAME]", help="run only these rows: sd15:compile, compile (both models), sdxl "
                                                    "(all its rows), throughput")
    parser.add_argument("--model", help="a real SD 1.5 model (hub id or diffusers folder) instead of random weights")
    parser.add_argument("--sdxl-model", help="a real SDXL model (hub id or diffusers folder) instead of random weights")
    parser.add_argument("--preview-decoder", help="SD_PREVIEW_DECODER for the SD 1.5 row (an AutoencoderTiny)")
    parser.add_argument("--sdxl-preview-decoder", help="SDXL_PREVIEW_DECODER for the SDXL row")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per picture (default 20; smoke 2)")
    parser.add_argument("--repeats", type=float, default=1.0, help="times the default number of timed calls")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds; rows that would not fit are skipped (default 450)")
    parser.add_argument("--device", default=None, help="torch device (default cuda; smoke: cpu)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs of the throughput run (default 10; smoke 2)")
    parser.add_argument("--compile-backend", default=None,
                        help="engine.speed.COMPILE_BACKEND for the compile rows (default: the engine's; smoke: eager)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.steps = args.steps or (2 if args.smoke else 20)
    args.jobs = args.jobs or (2 if args.smoke else 10)
    if args.smoke and args.compile_backend is None:
        args.compile_backend = "eager"  # inductor's C++ build of a UNet takes minutes on a small CPU
    unknown = [c for c in args.only if c and not any(selected([c], m, n) for m, n in ORDER)]
    if unknown:
        parser.error(f"--only: no row {', '.join(unknown)}; rows: {', '.join(Step(m, n, '', 0).key for m, n in ORDER)}")

    steps = plan(args)
    if args.plan:
        return show_plan(args, steps)
    return run(args, steps)


def show_plan(args: argparse.Namespace, steps: list[Step]) -> int:
    where = "--smoke on a 2-core CPU" if args.smoke else "an H100/H200-class GPU (not yet measured)"
    print(f"plan: {len(steps)} steps, estimates for {where}, budget {args.budget:.0f} s; as it runs, the "
          f"estimates are scaled by what each model's first rows took, which may fit more rows or fewer")
    total = 0.0
    for step in steps:
        fits = total + step.estimate <= args.budget
        total += step.estimate if fits else 0
        kind = "prepare" if step.name == "prepare" else "row"
        print(f"{kind:<8}{step.key:<24}{step.label:<60}est. {step.estimate:4.0f} s  "
              + (f"(by {total:.0f} s)" if fits else "would be skipped: over the budget"))
    print(f"estimated total: {total:.0f} s")
    return 0


def run(args: argparse.Namespace, steps: list[Step]) -> int:
    budget = Budget(args.budget)
    results: dict[str, dict] = {}
    about: dict = {}
    describe = Step("", "describe", "the device and the versions", 0)
    prepares = [s for s in steps if s.name == "prepare"]
    rows = [s for s in steps if s.name not in ("prepare", "throughput")]
    throughput = next((s for s in steps if s.name == "throughput"), None)
    # On a GPU each row has a process of its own. With --smoke all rows share one (the compile rows last),
    # and the throughput run goes beside it once the SD 1.5 model is written: there a process's imports
    # cost more than its rows, and its figures are only a check that each row runs.
    if args.smoke:
        groups = [[describe, *prepares, *sorted(rows, key=lambda s: s.name == "compile"),
                   *([throughput] if throughput else [])]]
    else:
        groups = [[describe, *prepares]] + [[s] for s in steps if s.name != "prepare"]
    beside: list[threading.Thread] = []
    alongside: list[Step] = []  # the group's steps that run beside its worker

    with tempfile.TemporaryDirectory(prefix="dreambot-gpu-bench-") as tmp:
        work = Path(tmp)
        folders = {model: work / model for model in MODELS}
        spec = {"smoke": args.smoke, "device": args.device, "steps": args.steps, "repeats": args.repeats,
                "compile_backend": args.compile_backend}
        sources = {"sd15": args.model or str(folders["sd15"]), "sdxl": args.sdxl_model or str(folders["sdxl"])}

        def task(step: Step) -> dict:
            settings = dict(step.settings)
            for name, value in settings.items():
                if name.endswith("preview_decoder") and not value:
                    settings[name] = str(work / f"{step.model}-preview")
            return {"key": step.key, "model": step.model, "name": step.name, "settings": settings,
                    "source": sources.get(step.model, ""), "folder": str(folders.get(step.model, "")),
                    "given": source_given(args, step.model) if step.model else False,
                    "preview": str(work / f"{step.model}-preview")}

        def throughput_run(timeout: float) -> None:
            arrived(throughput.key, run_throughput(args, sources["sd15"], work, timeout))

        def start_beside() -> None:
            beside.append(threading.Thread(target=throughput_run, args=(max(60.0, budget.left() + 30),)))
            beside[-1].start()

        def arrived(key: str, result: dict) -> None:
            """Each result as it comes: the header once the device is known, a line per step."""
            nonlocal about
            results[key] = result
            if key == "describe":
                about = result
                if result.get("status") == "ok":
                    print_header(args, about)
                return
            report(next(s for s in steps if s.key == key), result, budget)
            if key == "sd15:prepare" and result.get("status") == "ok" and throughput in alongside:
                start_beside()

        for group in groups:
            todo, skipped, planned = [], {}, 0.0
            for step in group:
                needs = "sd15" if step.name == "throughput" else step.model
                prepared = results.get(f"{needs}:prepare")
                if step.name not in ("describe", "prepare") and prepared and prepared.get("status") != "ok":
                    skipped[step.key] = {"status": "skipped", "why": f"{MODELS[needs]} was not prepared"}
                elif step.name not in ("describe", "prepare") and \
                        budget.elapsed() + planned + budget.expected(step) > budget.seconds:
                    left = max(budget.left() - planned, 0)
                    why = f"over the budget: est. {budget.expected(step):.0f} s, {left:.0f} s left"
                    skipped[step.key] = {"status": "skipped", "why": why}
                else:
                    todo.append(step)
                    planned += budget.expected(step)
            alongside = [s for s in todo if s.name == "throughput"] if len(todo) > 1 else []
            in_worker = [s for s in todo if s not in alongside]
            started = time.monotonic()
            timeout = max(60.0, budget.left() + 30)
            if alongside and not any(s.key == "sd15:prepare" for s in in_worker):  # --model: nothing to wait for
                start_beside()
            if in_worker == [throughput]:
                throughput_run(timeout)
            elif in_worker:
                worker_run(spec, [task(s) for s in in_worker], work, timeout, arrived)
            if group[0] is describe and about.get("status") != "ok":
                print(about.get("why") or "the first worker gave no answer", file=sys.stderr)
                return 2
            for key, result in skipped.items():  # after the header, which the first group's worker brings
                arrived(key, result)
            for step in in_worker:
                if step.key not in results and step is not describe:
                    arrived(step.key, {"status": "failed", "why": "no result (the worker stopped)"})
            if todo == group and len(todo) == 1 and results[todo[0].key].get("status") == "ok":
                budget.learn(todo[0], time.monotonic() - started)
            for thread in beside:
                thread.join()

    print()
    if rows:
        print(LEGEND)
    for model in MODELS:
        model_rows = [s for s in rows if s.model == model]
        if model_rows:
            print_table(args, model, model_rows, results, about)
    if throughput:
        print_throughput(results.get(throughput.key, {"status": "not run", "why": "its model was not prepared"}))
    wall = budget.elapsed()
    skipped = [s.key for s in steps if results.get(s.key, {}).get("status") == "skipped"]
    failed = [s.key for s in steps if results.get(s.key, {}).get("status") not in ("ok", "skipped")]
    print(f"total wall time: {wall:.1f} s (budget {args.budget:.0f} s); rows skipped: {', '.join(skipped) or 'none'}; "
          f"failed: {', '.join(failed) or 'none'}")
    print(json.dumps({"gpu_bench": {
        "smoke": args.smoke, "device": about.get("device"), "device_name": about.get("device_name"),
        "dtype": about.get("dtype"), "torch": about.get("torch"), "diffusers": about.get("diffusers"),
        "steps": args.steps, "wall_seconds": round(wall, 1), "budget_seconds": args.budget,
        "rows": [{"key": s.key, "model": s.model, "row": s.name, "label": s.label, **results.get(s.key, {})}
                 for s in steps if s.name != "throughput"],
        "throughput": results.get(throughput.key) if throughput else None,
    }}))
    return 1 if failed else 0


def worker_run(spec: dict, tasks: list[dict], work: Path, timeout: float, arrived) -> None:
    """Run tasks in one fresh `bench/gpu.py --worker` process, handing each result to `arrived(key,
    result)` as it comes. Its stderr (the libraries' warnings, tracebacks) is kept in a file, and its
    end shown when a task fails."""
    log_path = work / f"worker-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], cwd=work,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                   env={**clean_environment(), **threads(spec["smoke"])}, start_new_session=True)
    # Past its time the worker is stopped with its children (inductor's compile workers).
    timer = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
    timer.start()
    try:
        process.stdin.write(json.dumps({**spec, "tasks": tasks}))
        process.stdin.close()
    except BrokenPipeError:  # it died at start; its stderr says why
        pass
    answered, failed = 0, False
    for line in process.stdout:
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            answered += 1
            failed = failed or result.get("status") == "failed"
            arrived(result.pop("key"), result)
    process.wait()
    timer.cancel()
    if process.returncode == -signal.SIGKILL:
        print(f"  the worker ran past {timeout:.0f} s and was stopped", flush=True)
    if failed or answered < len(tasks):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        print(f"  --- end of the worker's stderr ---\n{tail}", flush=True)


def threads(smoke: bool) -> dict[str, str]:
    """One torch thread under --smoke: on a small machine shared with other work, torch's default pool
    made a 64x64 picture take from 0.1 s to 10 s (bench/throughput.py's --threads says the same)."""
    return thread_settings(1) if smoke else {}


def run_throughput(args: argparse.Namespace, source: str, work: Path, timeout: float) -> dict:
    command = [sys.executable, str(REPO / "bench" / "throughput.py"), "--model", source, "--steps", str(args.steps),
               "--jobs", str(args.jobs), "--device", args.device]
    if args.smoke:
        command += ["--members", "2", "--threads", "1"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=work,
                             env=clean_environment())
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"ran past {timeout:.0f} s", "command": " ".join(command[1:])}
    ratios = {name: float(value) for name, value in
              re.findall(r"^(bot / bare|engine loop / bare|bot / engine loop): ([0-9.]+)", out.stdout, re.M)}
    if out.returncode or "bot / bare" not in ratios:
        return {"status": "failed", "why": f"exit {out.returncode}: {(out.stderr or out.stdout)[-2000:]}",
                "command": " ".join(command[1:])}
    return {"status": "ok", "bot_over_bare": ratios["bot / bare"], "engine_over_bare": ratios.get("engine loop / bare"),
            "bot_over_engine": ratios.get("bot / engine loop"), "output": out.stdout.strip().splitlines(),
            "command": "python " + " ".join(["bench/throughput.py", *command[2:]])}


def print_header(args: argparse.Namespace, about: dict) -> None:
    print("gpu bench: images per second of an SD 1.5-architecture and an SDXL-architecture model, plain diffusers vs "
          "Dreambot's engine with each speed option, batch 1 and 4, peak GPU memory; then the whole bot vs the bare "
          "loop")
    if args.smoke:
        print("SMOKE RUN: tiny random-weight models on the CPU, 64x64, batch 1 and 2: it checks that every row runs "
              "end to end (the throughput run goes alongside the rows); its figures say nothing about a GPU")
    print(f"device: {about['device_name']} ({about['device']}), {about['dtype']}; torch {about['torch']}, "
          f"diffusers {about['diffusers']}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    compile_note = f"; compile backend {args.compile_backend}" if args.compile_backend else ""
    print(f"{args.steps} steps, guidance {GUIDANCE:g}, one prompt; each batch size: one untimed warm-up call of "
          f"{warm_steps(args.steps)} steps, then {calls('sd15', 1, args)}/{calls('sd15', 4, args)} timed calls "
          f"(SD 1.5, batch 1/{batches(args.smoke)[1]}), {calls('sdxl', 1, args)}/{calls('sdxl', 4, args)} (SDXL); "
          f"budget {args.budget:.0f} s{compile_note}")


def report(step: Step, result: dict | None, budget: Budget) -> None:
    """One line as each step ends, so that a person watching sees it go."""
    result = result or {"status": "failed", "why": "no result"}
    status = result.get("status")
    if status == "ok" and step.name == "throughput":
        text = f"bot / bare {result['bot_over_bare']:.3f}"
    elif status == "ok" and "batches" in result:
        text = ", ".join(f"batch {b['batch']}: {b['images_per_second']:.3f} images/s" for b in result["batches"])
        text += f"; load {result['load_seconds']:.1f} s"
    elif status == "ok":
        text = f"{result.get('seconds', 0):.1f} s"
    else:
        text = f"{status}: {result.get('why', '')}"
    print(f"[{budget.elapsed():5.0f} s] {step.key}: {text}", flush=True)


LEGEND = """\
images/s over the timed calls (s/image its inverse); / diffusers: images/s over the plain diffusers row's at the same
batch; peak GiB: torch.cuda.max_memory_allocated over the batch size's calls, weights included ("-" on a CPU);
load s: from_pretrained + to(device), or Engine.load; warm-up s: the untimed short call at that batch; steps: UNet
steps per call, as the step callback counted them (PNDM, SD 1.5's own scheduler, runs one more than asked).
"""


def print_table(args: argparse.Namespace, model: str, rows: list[Step], results: dict, about: dict) -> None:
    prepared = results.get(f"{model}:prepare", {"source": args.model if model == "sd15" else args.sdxl_model,
                                                  "what": "given"})
    sizes = sorted({f"{r['size']}x{r['size']}" for s in rows if "size" in (r := results.get(s.key, {}))})
    print(f"{MODELS[model]}: {prepared.get('source')} ({prepared.get('what')}), {', '.join(sizes) or 'no size'}, "
          f"{args.steps} steps, {about['dtype']} on {about['device']}")
    print(f"  {'row':<20}{'configuration':<40}{'batch':>6}{'images/s':>10}{'s/image':>9}{'/ diffusers':>12}"
          f"{'peak GiB':>10}{'load s':>8}{'warm-up s':>10}{'steps':>6}")
    plain = {b["batch"]: b["images_per_second"] for b in results.get(f"{model}:diffusers", {}).get("batches", [])}
    notes = []
    for step in rows:
        result = results.get(step.key, {})
        if result.get("status") != "ok":
            print(f"  {step.name:<20}{step.label:<40}  {result.get('status', 'not run')}: {result.get('why', '')}")
            continue
        for i, b in enumerate(result["batches"]):
            rate = b["images_per_second"]
            peak = "-" if b["peak_memory_bytes"] is None else f"{b['peak_memory_bytes'] / 2**30:.2f}"
            versus = f"{rate / plain[b['batch']]:.3f}" if plain.get(b["batch"]) else "-"
            print(f"  {step.name if i == 0 else '':<20}{step.label if i == 0 else '':<40}{b['batch']:>6}"
                  f"{rate:>10.3f}{1 / rate:>9.3f}{versus:>12}{peak:>10}"
                  f"{result['load_seconds'] if i == 0 else '':>8}{b['warmup_seconds']:>10.2f}{b['steps']:>6}")
        said = [line for line in result.get("log", []) if not line.startswith("compiled ")]
        notes.append(f"  {step.name}: " + "; ".join(filter(None, [result.get("note"), *said])))
        if step.name == "compile":
            compiled = re.search(r"compiled .* in ([0-9.]+) s", " ".join(result.get("log", [])))
            defaults = results.get(f"{model}:engine", {}).get("load_seconds")
            notes.append(f"  compile: warm-up at load {compiled.group(1) if compiled else '?'} s (backend "
                         f"{result.get('compile_backend')}), not counted in images/s; the whole load "
                         f"{result['load_seconds']} s" + (f" vs {defaults} s with the defaults" if defaults else ""))
    print("\n".join(notes))
    print()


def print_throughput(result: dict) -> None:
    if result.get("status") != "ok":
        print(f"whole bot vs bare loop: {result.get('status')}: {result.get('why')}")
        return
    print(f"whole bot vs bare loop: {result['command']}")
    keep = ("round ", "model ", "                    ", "whole bot", "engine loop", "bare diffusers", "bot / ")
    for line in result["output"]:
        if line.startswith(keep):
            print(f"  {line}")
    print(f"bot / bare: {result['bot_over_bare']:.3f}")
    print()


# --- the worker: one process that loads and times ------------------------------------------------------

GUIDANCE = 7.0
PROMPT = PROMPTS[0]


def batches(smoke: bool) -> tuple[int, int]:
    return (1, 2) if smoke else (1, PREFERRED_BATCH)


def calls(model: str, batch: int, args) -> int:
    """Timed calls per batch size: fewer for SDXL and for batches, whose calls take longer."""
    base = {("sd15", 1): 3, ("sd15", 4): 2, ("sdxl", 1): 2, ("sdxl", 4): 1}[model, 1 if batch == 1 else 4]
    return 1 if args.smoke else max(1, round(base * args.repeats))


def warm_steps(steps: int) -> int:
    """A warm-up call runs every kernel at the timed calls' shapes: a few steps do."""
    return min(steps, 3)


def worker() -> int:
    spec = json.loads(sys.stdin.read())
    sys.path.insert(0, str(REPO))
    import torch

    from engine.loading import resolve_dtype

    device = torch.device(spec["device"])
    context = {"torch": torch, **spec, "args": argparse.Namespace(smoke=spec["smoke"], repeats=spec["repeats"]),
               "torch_device": device, "dtype": resolve_dtype("auto", device)}
    for task in spec["tasks"]:
        started = time.perf_counter()
        collected = Collected()  # what engine.speed says it did: the row's proof that its setting took
        speed_log = logging.getLogger("engine.speed")
        speed_log.addHandler(collected)
        speed_log.setLevel(logging.INFO)
        try:
            result = {"status": "ok", **TASKS[task["name"]](task, context)}
        except Unavailable as reason:
            result = {"status": "unavailable", "why": str(reason)}
        except Exception as error:
            traceback.print_exc()
            result = {"status": "failed", "why": f"{type(error).__name__}: {error}"[:500]}
        finally:
            speed_log.removeHandler(collected)
        print(MARK + json.dumps({"key": task["key"], **result, "seconds": round(time.perf_counter() - started, 2),
                                 **({"log": collected.lines} if collected.lines else {})}), flush=True)
        free(torch)
        if task["name"] == "describe" and result["status"] != "ok":
            break
    return 0


class Unavailable(Exception):
    """The engine has no such setting (yet)."""


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def free(torch) -> None:
    """What the last call or row left on the GPU, given back. Not on a CPU, where a collection costs more
    (0.7 s, with torch and diffusers loaded) than the tiny models hold."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def describe(task: dict, context: dict) -> dict:
    torch = context["torch"]
    import diffusers

    device = context["torch_device"]
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device here: run `python bench/gpu.py --smoke` for the CPU check, or pass "
                           "--device to measure on another (full-size models on a CPU take hours)")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = machine().split(",")[0]
    return {"device": str(device), "device_name": name, "dtype": str(context["dtype"]).removeprefix("torch."),
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def prepare(task: dict, context: dict) -> dict:
    """The model's folder (random weights) unless one was given, and a preview decoder of TAESD's
    architecture with random weights (its speed is TAESD's)."""
    import full_size
    from diffusers import AutoencoderTiny

    from engine.tiny import write_tiny_model

    device, dtype = context["torch_device"], context["dtype"]
    model = task["model"]
    if task["given"]:
        what = "given"
    elif context["smoke"]:
        write_tiny_model(task["folder"], family="sd1" if model == "sd15" else "sdxl")
        what = "tiny, random weights"
    else:
        full_size.write(model, task["folder"], dtype, device)
        what = "full size, random weights"
    AutoencoderTiny().save_pretrained(task["preview"])  # 2.4M parameters: the engine loads it in its dtype
    return {"source": task["source"], "what": what}


def timed(call, model: str, context: dict) -> list[dict]:
    """Per batch size: one untimed warm-up call, then the timed calls; images per second and the peak
    memory the device held over both (weights included)."""
    torch, device = context["torch"], context["torch_device"]
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    out = []
    for batch in batches(context["smoke"]):
        n = calls(model, batch, context["args"])
        free(torch)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        call(batch, warm_steps(context["steps"]), 10_000)
        sync()
        warm = time.perf_counter() - started
        started = time.perf_counter()
        steps = [call(batch, context["steps"], 1000 + 10 * i) for i in range(n)]
        sync()
        seconds = time.perf_counter() - started
        out.append({"batch": batch, "calls": n, "images": n * batch, "seconds": round(seconds, 3),
                    "images_per_second": n * batch / seconds, "warmup_seconds": round(warm, 2), "steps": steps[0],
                    "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None})
    return out


def diffusers_row(task: dict, context: dict) -> dict:
    torch, device, dtype = context["torch"], context["torch_device"], context["dtype"]
    from diffusers import DiffusionPipeline

    started = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(task["source"], dtype=dtype)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # a real SD 1.5 ships one; the bare loop checks nothing
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - started
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # native: 512 for SD 1.5, 1024 for SDXL

    def call(batch: int, steps: int, seed: int) -> int:
        counted = []

        def count(pipe, step, timestep, tensors):
            counted.append(step)
            return tensors

        images = pipe(prompt=PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE, width=size, height=size,
                      num_images_per_prompt=batch, generator=torch.Generator(device).manual_seed(seed),
                      callback_on_step_end=count).images
        assert len(images) == batch, f"{len(images)} pictures for a batch of {batch}"
        return len(counted)

    return {"load_seconds": round(load, 1), "size": size, "batches": timed(call, task["model"], context),
            "note": f"{type(pipe.scheduler).__name__} (the model's own), attention "
                    f"{type(next(iter(pipe.unet.attn_processors.values()))).__name__}"}


def engine_row(task: dict, context: dict) -> dict:
    from dreambot.request import GenerateRequest
    from dreambot.settings import EngineSettings
    from dreambot.wire import Job
    from engine.pipeline import Engine

    missing = [name for name in task["settings"] if name not in EngineSettings.model_fields]
    if missing:
        raise Unavailable(f"EngineSettings has no {', '.join(missing)}")
    backend = None
    if task["name"] == "compile":
        from engine import speed

        if context.get("compile_backend"):
            speed.COMPILE_BACKEND = context["compile_backend"]
        backend = speed.COMPILE_BACKEND
    started = time.perf_counter()
    engine = Engine.load(EngineSettings(_env_file=None, sd_model=task["source"], sd_device=context["device"],
                                        **task["settings"]))
    load = time.perf_counter() - started
    size = engine.native_size
    previews = task["name"] == "preview-decoder"
    preview_seconds: list[float] = []

    def call(batch: int, steps: int, seed: int) -> int:
        counted = []

        def progress(step, total, preview):
            counted.append(step)
            if previews:
                began = time.perf_counter()
                if preview(0) is None:
                    raise RuntimeError("the engine made no preview")
                preview_seconds.append(time.perf_counter() - began)

        # keep_flagged: every picture is encoded, whatever the classifier makes of the noise.
        request = GenerateRequest(prompt=PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE, seed=seed,
                                  width=size, height=size, num_images=batch, keep_flagged=True)
        [result] = engine.generate_batch([Job(seed, request)], {seed: progress})
        if isinstance(result, Exception):
            raise result
        assert len(result.images) == batch and all(image.data for image in result.images), "pictures missing"
        return len(counted)

    out = {"load_seconds": round(load, 1), "size": size, "batches": timed(call, task["model"], context),
           "note": f"safety checker {engine.safety.name}" if task["name"] == "engine" else ""}
    if backend:
        out["compile_backend"] = backend
    if previews:
        out["note"] += f"{len(preview_seconds)} previews, median {statistics.median(preview_seconds) * 1000:.1f} ms"
    return out


TASKS = {"describe": describe, "prepare": prepare, "diffusers": diffusers_row, "engine": engine_row,
         **{name: engine_row for name in (*OPTIONS, "compile")}}


if __name__ == "__main__":
    raise SystemExit(main())
