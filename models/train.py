"""Training of Richardson decoders on sampled tasks, with a checkpoint cache.

Adam on the depth-L risk K^{-1} E||x_L - x*||^2 (seed 000 eq 19), one fresh batch per
step from a per-step seed, so a run is a pure function of its TrainConfig.  The task
family is the config's `task`: in-context least squares (models.tasks.TaskConfig), GP
posterior-latent solves (models.gp.GPTaskConfig) or encoded PDE query solves
(models.pde.PDETaskConfig); each has `.dim` (the decoder's K) and `.sampler(device, dtype)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .dtypes import as_device, as_dtype, dtype_name
from .preconditioners import build_preconditioner
from .richardson import RichardsonDecoder, depth_risk
from .gp import GPTaskConfig
from .pde import PDETaskConfig
from .seeding import derive_seed
from .tasks import TaskConfig

TaskFamilyConfig = TaskConfig | GPTaskConfig | PDETaskConfig
TASK_FAMILIES: dict[str, type] = {c.family: c for c in (TaskConfig, GPTaskConfig, PDETaskConfig)}

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash() -> str:
    """SHA-256 of the models package sources: cached checkpoints die with a code change."""
    h = hashlib.sha256()
    for f in sorted(_PACKAGE_DIR.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained decoder (and so its cache key).

    `options` are extra preconditioner hyper-parameters as sorted (name, value) pairs,
    e.g. (("kernel", "rbf"),) for the Flexformer.
    """

    cls: str
    task: TaskFamilyConfig = field(default_factory=TaskConfig)
    L: int = 6
    steps: int = 300
    batch: int = 128
    lr: float = 1e-2
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in self.options)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (stored in checkpoints and hashed into the key)."""
        d = dataclasses.asdict(self)
        d["task"]["family"] = self.task.family
        d["options"] = [list(kv) for kv in self.options]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        task = dict(d["task"])
        family = task.pop("family", TaskConfig.family)
        if family not in TASK_FAMILIES:
            raise ValueError(f"unknown task family {family!r}; known: {sorted(TASK_FAMILIES)}")
        d["task"] = TASK_FAMILIES[family](**task)
        d["options"] = tuple(tuple(kv) for kv in d.get("options", ()))
        return cls(**d)

    def key(self) -> str:
        """16 hex digits: hash of the config plus the models source hash."""
        text = json.dumps(self.to_dict(), sort_keys=True) + source_hash()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_decoder(cfg: TrainConfig) -> RichardsonDecoder:
    """The untrained decoder of a config (deterministic init from cfg.seed)."""
    precond = build_preconditioner(cfg.cls, cfg.task.dim, device=as_device(cfg.device),
                                   dtype=as_dtype(cfg.dtype), seed=derive_seed("init", cfg.seed),
                                   **dict(cfg.options))
    return RichardsonDecoder(precond, cfg.L)


def train_batch_seed(cfg: TrainConfig, step: int) -> int:
    """The task seed of training step `step` (distinct from any small held-out seed)."""
    return derive_seed("train-batch", cfg.seed, step)


def train(cfg: TrainConfig, progress: Callable[[dict[str, Any]], None] | None = None,
          before_step: Callable[[int, RichardsonDecoder], None] | None = None
          ) -> tuple[RichardsonDecoder, list[dict[str, Any]]]:
    """Adam on the depth-L risk; history = [{"step", "risk"}] of the training batches.

    `before_step(step, decoder)` sees the decoder before each update (for logging; it
    must not change it).  A non-finite risk stops training with an error rather than
    saving a broken model.
    """
    prompts = cfg.task.sampler(as_device(cfg.device), as_dtype(cfg.dtype))
    decoder = build_decoder(cfg)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    history: list[dict[str, Any]] = []
    for step in range(cfg.steps):
        if before_step is not None:
            before_step(step, decoder)
        tasks = prompts.sample(cfg.batch, train_batch_seed(cfg, step))
        risk = depth_risk(decoder, tasks)
        value = float(risk.detach())
        if not torch.isfinite(risk):
            raise RuntimeError(f"training {cfg.cls} diverged at step {step}: risk {value}")
        opt.zero_grad(set_to_none=True)
        risk.backward()
        opt.step()
        record = {"step": step, "risk": value}
        history.append(record)
        if progress is not None:
            progress(record)
    decoder.eval()
    return decoder, history


def checkpoint_path(cfg: TrainConfig, cache_dir: Path) -> Path:
    """Where load_or_train keeps the checkpoint of `cfg`."""
    return Path(cache_dir) / f"{cfg.key()}.safetensors"


def load_or_train(cfg: TrainConfig, cache_dir: Path,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> RichardsonDecoder:
    """Load the cached checkpoint of `cfg`, or train and save it.

    A cached file that is unreadable or stores another config raises CheckpointError
    (naming the file); it is never silently retrained over.
    """
    path = checkpoint_path(cfg, cache_dir)
    with _training_lock(path):  # a second process asking for the same config waits, then loads
        if path.exists():
            decoder, _ = load_checkpoint(path, as_device(cfg.device), as_dtype(cfg.dtype),
                                         expect_config=cfg.to_dict())
            return decoder
        decoder, _ = train(cfg, progress)
        save_checkpoint(path, decoder, cfg.to_dict())
    return decoder


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`.lock (POSIX flock; a no-op where fcntl is absent), so
    xdist workers needing one checkpoint train it once instead of each on its own."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
