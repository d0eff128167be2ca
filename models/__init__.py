"""Systems under test: Richardson decoders with learned preconditioners, task samplers,
trainers, checkpoints and descriptive metrics.  Never imports `properties` or `certify`.

The function `train` is deliberately not re-exported here: it would shadow the
submodule `models.train` (so `import models.train as m` would yield the function and
monkeypatching the module would break).  Use `from models.train import train`.
"""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .eb import eb_upper
from .metrics import checkpoint_metrics, oracle_P
from .preconditioners import (PRECONDITIONERS, Diagonal, Flexformer, FreeLinear, FrozenLinear,
                              Preconditioner, SoftmaxUpdate, build_preconditioner)
from .richardson import RichardsonDecoder, apply, depth_risk, residual
from .tasks import LeastSquaresPrompts, TaskConfig, Tasks, spd_system
from .train import TrainConfig, build_decoder, load_or_train

__all__ = [
    "CheckpointError", "load_checkpoint", "save_checkpoint", "eb_upper", "checkpoint_metrics",
    "oracle_P", "PRECONDITIONERS", "Diagonal", "Flexformer", "FreeLinear", "FrozenLinear",
    "Preconditioner", "SoftmaxUpdate", "build_preconditioner", "RichardsonDecoder", "apply",
    "depth_risk", "residual", "LeastSquaresPrompts", "TaskConfig", "Tasks", "spd_system",
    "TrainConfig", "build_decoder", "load_or_train",
]
