"""The preprocessing settings (crop geometry and targets) and their checks: plain data, no numpy or h5py."""

from __future__ import annotations

from dataclasses import dataclass

from cnnmrf.errors import CnnmrfError


@dataclass
class PreprocessConfig:
    """How raw FLIC becomes model inputs and targets (saved in the HDF5 attributes and in every checkpoint)."""

    input_size: int = 128  # side of the square model input, pixels
    crop_scale: float = 3.0  # crop side / FLIC torso-box height (covers >99% of FLIC joints)
    heatmap_stride: int = 2  # model-input pixels per heatmap pixel (the detector's output stride: small-hr's 2)
    heatmap_sigma: float = 2.0  # std of the target Gaussians, in heatmap pixels (4 input pixels at stride 2)
    observer_centric: bool = True  # MODEC's rule: swap arm labels of people seen from behind

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H, W) of the heatmaps."""
        side = self.input_size // self.heatmap_stride
        return side, side


# The range of each PreprocessConfig setting: (type, least, most); the command line's limits, and sane maxima.
CONFIG_RANGES: dict[str, tuple[type, float, float]] = {
    "input_size": (int, 16, 4096),
    "crop_scale": (float, 0.5, 100.0),
    "heatmap_stride": (int, 1, 64),
    "heatmap_sigma": (float, 0.1, 100.0),
    "observer_centric": (bool, 0, 1),
}


def preprocess_config_from(data: object, where: str) -> PreprocessConfig:
    """The :class:`PreprocessConfig` recorded as plain data (a dataset's ``config`` attribute, a checkpoint's
    ``preprocess``), checked: every setting present and known, of its type and in its range.

    Args:
        data: the recorded settings.
        where: what recorded them, for the message (e.g. "dataset data/flic.h5", "checkpoint best.pt").

    Raises:
        CnnmrfError: they are not a valid crop geometry; the one message names ``where`` and the first problem.
    """

    def invalid(problem: str) -> CnnmrfError:
        return CnnmrfError(f"{where} records an invalid crop geometry (preprocess settings): {problem}")

    if not isinstance(data, dict):
        raise invalid(f"a {type(data).__name__}, not a dict of settings")
    unknown = sorted(str(k) for k in set(data) - set(CONFIG_RANGES))
    missing = sorted(set(CONFIG_RANGES) - set(data))
    if unknown or missing:
        raise invalid(
            "; ".join([f"unknown {', '.join(unknown)}"] * bool(unknown) + [f"no {', '.join(missing)}"] * bool(missing))
        )
    for name, (kind, least, most) in CONFIG_RANGES.items():
        value = data[name]
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            numeric = isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)
            ok = numeric and least <= value <= most  # NaN fails both comparisons
        if not ok:
            want = (
                "true or false"
                if kind is bool
                else f"{'an integer' if kind is int else 'a number'} in [{least:g}, {most:g}]"
            )
            raise invalid(f"{name} is {value!r}, not {want}")
    config = PreprocessConfig(**data)
    if config.heatmap_stride > config.input_size:
        raise invalid(f"heatmap_stride {config.heatmap_stride} exceeds input_size {config.input_size}")
    return config
