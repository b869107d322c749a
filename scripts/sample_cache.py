"""Draw and store the sample sets of chapter 14's slow rows, with their provenance.

    python scripts/sample_cache.py ddpm --n 1000 --seeds 10 11 12 --threads 1   # hours on a CPU
    python scripts/sample_cache.py heun        # default: Lab 14's full n_table, seeds and rerun_seeds
    python scripts/sample_cache.py pixelcnn --n 1000                            # resumes if interrupted
    python scripts/sample_cache.py --list

The set of row ROW and seed s is exactly what ``zoo.score_seeds`` draws live:
``zoo.sample_in_batches(zoo.quantised(sampler.sample), model, n, torch.Generator(device).manual_seed(s),
batch_size)``: batches of ``batch_size`` images from one generator, each image rounded to 8-bit
levels. On the same device (and, on a CPU, the same number of threads) the stored bytes are those of
a live draw. The script writes ``checkpoints/samples/ROW-sSEED-nN.pt`` (uint8, (n, 1, 28, 28): 784
bytes per image) and its manifest entry ``ROW-sSEED-nN.json``: the row's definition (sampler, NFE,
checkpoints and their SHA-256, batch size), seed, n, device, threads, versions, date, wall time, the
command, and the file's SHA-256. Chapter 14's lab uses a set only when that definition matches the
row as it is now (``zoo.read_cache``), and says so in its output.

Interrupted runs resume: after every batch the images so far and the generator's state after them
are written atomically to ``ROW-sSEED-nN.partial.pt``; the next run with the same arguments restores
the generator and continues, so the finished set has the bytes of an uninterrupted draw.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _save_atomic(obj, file: Path) -> None:
    tmp = file.with_name(file.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(file)


def draw(sample, model, n: int, seed: int, batch_size: int, partial: Path, device, definition: dict, *,
         stop_after: int | None = None) -> tuple[torch.Tensor | None, float]:
    """n images of ``sample`` as uint8 (CPU), drawn as ``zoo.score_seeds`` draws seed ``seed``; wall seconds.

    Resumes from ``partial`` when it holds a draw of the same definition, seed, n and batch size.
    ``stop_after``: return (None, seconds) after that many new batches, leaving ``partial`` behind (an
    interruption, for the tests).
    """
    from course_lib import zoo

    key = {"definition": definition, "seed": seed, "n": n, "batch_size": batch_size}
    g = torch.Generator(device=device).manual_seed(seed)
    done, wall = [], 0.0
    if partial.exists():
        state = torch.load(partial, weights_only=True)
        if {k: state.get(k) for k in key} != key:
            raise SystemExit(f"{partial.name} belongs to another draw (other checkpoint, sampler, seed or "
                             "sizes): delete it to start afresh.")
        done, wall = [state["images"]], float(state["wall_s"])
        g.set_state(state["generator"])
        print(f"  resuming {partial.name}: {len(state['images'])} of {n} images already drawn", flush=True)
    have = sum(len(x) for x in done)
    new_batches = 0
    while have < n:
        if stop_after is not None and new_batches >= stop_after:
            return None, wall
        m = min(batch_size, n - have)
        start = time.perf_counter()
        with torch.no_grad():
            x = zoo.to_uint8(sample(model, m, g)).cpu()
        wall += time.perf_counter() - start
        done.append(x)
        have += m
        new_batches += 1
        _save_atomic({**key, "images": torch.cat(done), "generator": g.get_state(), "wall_s": wall}, partial)
        print(f"  {have:>6} / {n} images, {wall:8.1f} s", flush=True)
    return torch.cat(done), wall


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def cache_row(key: str, seed: int, n: int, batch_size: int, folder: Path, device: torch.device, *,
              command: str, model=None, stop_after: int | None = None) -> Path | None:
    """Draw (or finish) the set of row ``key`` and ``seed`` and write it with its entry; its path."""
    import course_lib
    from course_lib import pretrained, zoo

    s = zoo.SAMPLERS[key]
    definition = zoo.row_definition(key, batch_size)
    file = zoo.cache_path(key, seed, n, folder)
    file.parent.mkdir(parents=True, exist_ok=True)
    model = pretrained.load(s.checkpoint, device) if model is None else model
    partial = file.with_suffix(".partial.pt")
    images, wall = draw(s.sample, model, n, seed, batch_size, partial, device, definition,
                        stop_after=stop_after)
    if images is None:
        return None
    entry = {
        "file": file.name, "row": key, "label": s.label, "seed": seed, "n": n, "nfe": s.evaluations,
        "definition": definition,
        "checkpoint": s.checkpoint, "checkpoint_sha256": definition["checkpoints"][s.checkpoint],
        "draw": "zoo.sample_in_batches(zoo.quantised(sample), model, n, torch.Generator(device)"
                ".manual_seed(seed), batch_size), stored as uint8",
        "device": device_name(device), "threads": torch.get_num_threads(),
        "course_lib": course_lib.__version__, "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 1), "images_per_s": round(n / wall, 4) if wall > 0 else None,
        "command": command,
        "sha256": hashlib.sha256(images.numpy().tobytes()).hexdigest(),
    }
    _save_atomic(images, file)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entry, indent=2) + "\n")
    tmp.replace(file.with_suffix(".json"))
    partial.unlink(missing_ok=True)
    return file


def main(argv: list[str] | None = None) -> int:
    from course_lib import config, zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", nargs="?", help="a row of course_lib.zoo.SAMPLERS (see --list)")
    parser.add_argument("--n", type=int, default=None, help="images per set (default: Lab 14's full n_table)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one set per seed (default: Lab 14's full seeds and rerun_seeds, 10 to 15)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch (default: Lab 14's batch_size; a set matches only this)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default=str(zoo.SAMPLE_CACHE), help="folder (default checkpoints/samples)")
    parser.add_argument("--list", action="store_true", help="list the rows and their NFE")
    args = parser.parse_args(argv)
    full = config.budget("14_evaluation", "full")
    if args.list or not args.row:
        for key, s in zoo.available().items():
            print(f"{key:<18} NFE {s.evaluations:>5}  {s.label}")
        return 0
    if args.row not in zoo.available():
        raise SystemExit(f"unknown or unshipped row {args.row!r}; rows: {', '.join(zoo.available())}")
    torch.set_num_threads(args.threads)
    n = args.n or full["n_table"]
    seeds = args.seeds or [*full["seeds"], *full["rerun_seeds"]]  # the table and its rerun
    batch_size = args.batch_size or full["batch_size"]
    device = torch.device(args.device)
    for seed in seeds:
        command = (f"python scripts/sample_cache.py {args.row} --n {n} --seeds {seed} "
                   f"--batch-size {batch_size} --threads {args.threads} --device {args.device}")
        print(f"{args.row}, seed {seed}: {n} images in batches of {batch_size} on {device_name(device)}",
              flush=True)
        file = cache_row(args.row, seed, n, batch_size, Path(args.out), device, command=command)
        print(f"  wrote {file.name} and {file.with_suffix('.json').name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
