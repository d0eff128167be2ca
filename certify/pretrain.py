"""Train every checkpoint a tier needs into the shared cache, sharded over torch.distributed ranks.

    python -m certify.pretrain                                    # one process, this machine
    torchrun --standalone --nproc_per_node=2 -m certify.pretrain  # 2 ranks on one machine (gloo on CPU)
    torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 -m certify.pretrain --device cuda --slow   # 16 GPUs, 2 machines

The trainers are independent (one checkpoint per config), so the ranks split the job list
round-robin and train their share with the suite's own trainers (models.train.load_or_train,
models.ep.charlm.load_or_train): the checkpoints are the same files, keyed by config and source
hash, that `python -m certify` then loads instead of training.  torchrun does the process
management and rendezvous; torch.distributed gathers each rank's record for the summary (gloo on
CPU, nccl on CUDA, one GPU per local rank).  Across machines CERTIFY_CACHE must be a shared
folder (or be copied to the certifying machine afterwards: the files are self-describing).

Without torchrun (no WORLD_SIZE in the environment) it runs as a single rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from certify import backend as backend_mod
from certify import sut, sut_ep
from certify import sut_families as sf


@dataclasses.dataclass(frozen=True)
class Job:
    label: str
    path: Path
    run: Callable[[], object]


def jobs(backend: backend_mod.Backend, slow: bool = False) -> list[Job]:
    """The checkpoints of the default tier on `backend` (least-squares, GP and PDE decoders, the
    EP char-LM twins of the backend's tier; on cuda also the decoders at the seeds' prompt
    sizes), plus the sweep's other depths with `slow`."""
    cache = sut.cache_dir()
    labelled = [(f"lsq-{cls}-L{sut.train_config(cls, backend).L}", sut.train_config(cls, backend)) for cls in sut.CLASSES]
    if backend.device == "cuda":  # the seeds' prompt sizes (certify.sut.SEED_SCALE_PROMPTS)
        labelled += [(f"lsq-{cls}-K{sut.SEED_SCALE_K}-M{M}", sut.prompt_scale_config(cls, M, backend))
                     for M in sut.SEED_SCALE_PROMPTS for cls in sut.CLASSES]
    depths = sf.DEPTHS if slow else (sf.DEFAULT_L,)
    labelled += [(f"{f}-{sf.label(f, size)}-{cls}-L{L}", sf.train_config(f, size, cls, backend, L))
                 for L in depths for f in sf.FAMILIES for size in sf.PROMPT_SIZES[f] for cls in sut.CLASSES]
    out = [Job(label, sut.checkpoint_path(c, cache), (lambda c=c: sut._load_trained(c, cache))) for label, c in labelled]
    tier = "gpu" if backend.device == "cuda" else "toy"
    ep = sut_ep.tier_config(tier, backend)
    for twin in (ep, ep.twin("bptt")):
        out.append(Job(f"charlm-{tier}-{twin.rule}", sut_ep.charlm.checkpoint_path(twin, cache),
                       (lambda t=twin: sut_ep._load(t, cache))))
    return out


def shard(items: list, rank: int, world: int) -> list:
    """Rank `rank`'s share of `items`: every world-th item from its offset (disjoint, covering)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return items[rank::world]


def _init() -> tuple[int, int, int]:
    """(rank, world size, local rank), joining the process group when torchrun started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if os.environ.get("CERTIFY_DEVICE") == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(local)  # "cuda" in a config is then this rank's GPU
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local


def _gather(records: list[dict], world: int) -> list[dict]:
    if world == 1:
        return records
    import torch.distributed as dist

    everyone: list[list[dict] | None] = [None] * world
    dist.all_gather_object(everyone, records)
    return [r for part in everyone for r in (part or [])]


def run(backend: backend_mod.Backend, slow: bool, only: list[str], rank: int, world: int) -> list[dict]:
    mine = shard([j for j in jobs(backend, slow) if not only or any(o in j.label for o in only)], rank, world)
    records = []
    for j in mine:
        cached = j.path.exists()
        t0 = time.perf_counter()
        j.run()
        dt = time.perf_counter() - t0
        records.append({"job": j.label, "rank": rank, "cached": cached, "seconds": round(dt, 3), "path": str(j.path)})
        print(f"[pretrain rank {rank}/{world}] {j.label}: {'cached' if cached else 'trained'} in {dt:.1f} s",
              file=sys.stderr, flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m certify.pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu|cuda (default: env CERTIFY_DEVICE or cpu)")
    p.add_argument("--dtype", default=None, help="float64|float32 (default: env CERTIFY_DTYPE or float64)")
    p.add_argument("--slow", action="store_true", help="also the sweep's other depths (python -m certify --slow)")
    p.add_argument("--only", action="append", default=[], metavar="SUBSTRING", help="jobs whose label contains it")
    p.add_argument("--list", action="store_true", help="print the jobs and exit")
    p.add_argument("--json", type=Path, default=None, help="write the gathered records here (rank 0)")
    args = p.parse_args(argv)
    try:
        backend = backend_mod.resolve(args.device, args.dtype)  # raises when cuda is absent
    except backend_mod.BackendError as exc:
        print(f"certify.pretrain: {exc}", file=sys.stderr)
        return 2
    os.environ["CERTIFY_DEVICE"], os.environ["CERTIFY_DTYPE"] = backend.device, backend.dtype
    if args.list:
        for j in jobs(backend, args.slow):
            print(f"{j.label:32s} {'cached' if j.path.exists() else 'missing'}  {j.path}")
        return 0
    rank, world, local = _init()
    threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    records = _gather(run(backend, args.slow, args.only, rank, world), world)
    wall = time.perf_counter() - t0
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        trained = [r for r in records if not r["cached"]]
        print(f"certify.pretrain: {len(records)} checkpoints on {backend.name} over {world} rank(s): "
              f"{len(trained)} trained ({sum(r['seconds'] for r in trained):.1f} s of training), "
              f"{len(records) - len(trained)} cached; {wall:.1f} s wall")
        if args.json:
            args.json.write_text(json.dumps({"world": world, "wall": wall, "backend": backend.name,
                                             "records": records}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every file and record is written and the group destroyed by now; a rank that then runs the
        # interpreter's teardown can still abort in c10d/gloo's C++ thread destructors ("terminate called
        # without an active exception", seen once in CI), so a torchrun rank leaves without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
