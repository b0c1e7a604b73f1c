"""The bundled FLIC-trained weights (cnnmrf/weights/) and example image (cnnmrf/assets/)."""

from __future__ import annotations

from pathlib import Path

from cnnmrf.errors import CnnmrfError

BUNDLED_NAME = "flic_small.pt"
BUNDLED_PERSON_NAME = "flic_person.pt"  # the person detector (`cnnmrf train-person`), for `predict --search detector`
# The bundled weights' default --min-score (their calibration's ``min_score``), for `cnnmrf predict --help`, which
# answers without loading torch; a test keeps it equal to the value stored in the checkpoint.
BUNDLED_MIN_SCORE = 0.15


def _bundled(name: str, what: str, option: str, example: str) -> Path:
    """``cnnmrf/weights/<name>``, or a one-line error saying which option to pass instead (``example``)."""
    path = Path(__file__).parent / "weights" / name
    if not path.is_file():
        raise CnnmrfError(f"the bundled {what} {path} are missing; pass {option} CKPT ({example})")
    return path


def default_checkpoint() -> Path:
    """The bundled checkpoint (detector + spatial model trained on FLIC), used when no ``--checkpoint`` is given.

    Returns:
        Path of ``cnnmrf/weights/flic_small.pt``.

    Raises:
        CnnmrfError: the file is not there (e.g. a source checkout made before the weights were added).
    """
    return _bundled(BUNDLED_NAME, "weights", "--checkpoint", "e.g. runs/joint/best.pt from `cnnmrf train-joint`")


def default_person_checkpoint() -> Path:
    """The bundled person detector (trained on FLIC by `cnnmrf train-person`, exported with float16 weights), used by
    `cnnmrf predict --search detector` when no ``--person-checkpoint`` is given.

    Returns:
        Path of ``cnnmrf/weights/flic_person.pt``.

    Raises:
        CnnmrfError: the file is not there (e.g. a source checkout made before the weights were added).
    """
    example = "e.g. runs/person/best.pt from `cnnmrf train-person`"
    return _bundled(BUNDLED_PERSON_NAME, "person detector weights", "--person-checkpoint", example)
