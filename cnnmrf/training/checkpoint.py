"""Former home of the checkpoint functions, now in :mod:`cnnmrf.models.checkpoint` (names kept for old imports)."""

from cnnmrf.models.checkpoint import (  # noqa: F401
    CHECKPOINT_FORMAT,
    INFERENCE_KEYS,
    export_weights,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
