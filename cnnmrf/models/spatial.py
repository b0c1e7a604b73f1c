"""Fully connected MRF spatial model over the joint heatmaps (Tompson et al. 2014, section 3.2), run as one pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnmrf.joints import NUM_JOINTS


@dataclass
class SpatialConfig:
    """Hyper-parameters of the spatial model.

    Attributes:
        num_joints: Number of joints K (one heatmap channel each).
        heatmap_size: (H, W) of the detector heatmaps; the pairwise kernels are (2H-1, 2W-1).
        histogram_sigma: Gaussian blur, in heatmap pixels, of the displacement histograms used to initialise e(i|j).
        eps: Floor applied before every log (unaries and pairwise terms) so log-beliefs stay finite.
        kernel_floor: Added to the normalised (sum 1) histograms before the inverse softplus, so empty bins get a
            finite pre-softplus value.
        bias_init: Initial value of SP(b(i|j)), the constant added to every pairwise message.
        unary: What the softplus unaries are taken of: "log_softmax" of each detector map (for logits trained with the
            spatial-softmax loss, whose offset is arbitrary: SP(log_softmax(h)) ~ softmax(h), a probability map) or
            "raw" detector output (the paper's, for heatmaps regressed with MSE).
    """

    num_joints: int = NUM_JOINTS  # K: the 10 FLIC joints of the paper
    heatmap_size: tuple[int, int] = (32, 32)  # (H, W) of the detector output heatmaps
    histogram_sigma: float = 1.0  # blur (heatmap px) of the displacement histograms that initialise e(i|j)
    eps: float = 1e-6  # floor before each log of a positive quantity
    kernel_floor: float = 1e-7  # added to normalised histograms (each sums to 1) before the inverse softplus
    bias_init: float = 0.1  # initial SP(b(i|j)): the floor under each message, which keeps the prior's pull gentle
    unary: str = "log_softmax"  # input to the softplus unaries: "log_softmax" of each map, or "raw" (the paper's)


def inverse_softplus(y: Tensor) -> Tensor:
    """Numerically stable inverse of ``softplus``: ``log(exp(y) - 1)`` for ``y > 0``.

    Args:
        y: Strictly positive tensor.

    Returns:
        Tensor ``x`` with ``softplus(x) == y``.
    """
    return y + torch.log(-torch.expm1(-y))


def fast_fft_size(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are all in {2, 3, 5} (fast for pocketfft and cuFFT).

    Args:
        n: Minimum size.

    Returns:
        The fast FFT length.
    """
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def displacement_histograms(
    joints: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int], sigma: float
) -> np.ndarray:
    """Per-pair histograms of joint displacements, the prior used to initialise the pairwise kernels e(i|j).

    Bin ``(H-1 + dy, W-1 + dx)`` of slice ``(i, j)`` counts the examples where ``round(joint_i - joint_j) == (dx, dy)``.
    Only examples where both joints are visible contribute; displacements beyond the kernel extent are dropped.

    Args:
        joints: (N, K, 2) joint positions as (x, y) in heatmap pixel coordinates.
        visible: (N, K) bool visibility mask.
        heatmap_size: (H, W) of the heatmaps.
        sigma: Gaussian blur in pixels applied to each slice (0 disables it).

    Returns:
        (K, K, 2H-1, 2W-1) float32 array; each non-empty slice sums to 1, the diagonal (i == j) slices are zero.
    """
    height, width = heatmap_size
    joints = np.asarray(joints, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    num_joints = joints.shape[1]
    hist = np.zeros((num_joints, num_joints, 2 * height - 1, 2 * width - 1), dtype=np.float64)

    disp = joints[:, :, None, :] - joints[:, None, :, :]  # (N, K_i, K_j, 2): joint_i - joint_j as (dx, dy)
    valid = visible[:, :, None] & visible[:, None, :] & ~np.eye(num_joints, dtype=bool)  # (N, K_i, K_j)
    valid &= np.isfinite(disp).all(-1)
    disp = np.rint(np.where(valid[..., None], disp, 0.0)).astype(np.int64)  # (N, K_i, K_j, 2)
    dx, dy = disp[..., 0], disp[..., 1]  # (N, K_i, K_j) each
    valid &= (np.abs(dx) <= width - 1) & (np.abs(dy) <= height - 1)

    n_idx, i_idx, j_idx = np.nonzero(valid)  # (M,) each
    np.add.at(hist, (i_idx, j_idx, height - 1 + dy[n_idx, i_idx, j_idx], width - 1 + dx[n_idx, i_idx, j_idx]), 1.0)

    if sigma > 0:
        # Imported here: scipy.ndimage takes 0.2 s to import, and predict never needs it.
        from scipy.ndimage import gaussian_filter

        hist = gaussian_filter(hist, sigma=(0, 0, sigma, sigma), mode="constant")
    totals = hist.sum(axis=(2, 3), keepdims=True)  # (K, K, 1, 1)
    hist = np.divide(hist, totals, out=np.zeros_like(hist), where=totals > 0)
    return hist.astype(np.float32)


class SpatialModel(nn.Module):
    """Single-pass fully connected MRF: ``log p_i = log SP(h_i) + sum_{j != i} log(SP(e_ij) * SP(h_j) + SP(b_ij))``.

    ``*`` is a "same"-size 2-D convolution with ``message_ij[p] = sum_q SP(e_ij)[p - q + c] SP(h_j)[q]``, where
    ``c = (H-1, W-1)`` is the kernel centre, so ``e_ij[c + d]`` scores joint i lying at displacement d from joint j.
    All K*(K-1) convolutions are computed at once with batched real FFTs. ``h`` is the detector output after
    ``config.unary`` (by default each map's log-softmax, so SP(h) is close to the detector's probability map).

    Attributes:
        pair_kernels: (K, K, 2H-1, 2W-1) pre-softplus kernels e(i|j); diagonal slices are unused.
        pair_bias: (K, K) pre-softplus biases b(i|j); diagonal entries are unused.
    """

    def __init__(self, config: SpatialConfig) -> None:
        """Create the model with uniform kernels (call :meth:`init_from_histogram` for the paper's initialisation).

        Args:
            config: Model hyper-parameters.
        """
        super().__init__()
        self.config = config
        k = config.num_joints
        height, width = config.heatmap_size
        kh, kw = 2 * height - 1, 2 * width - 1
        uniform = torch.full((k, k, kh, kw), 1.0 / (kh * kw), dtype=torch.float64)
        self.pair_kernels = nn.Parameter(inverse_softplus(uniform).float())  # (K, K, KH, KW)
        bias = torch.full((k, k), config.bias_init, dtype=torch.float64)
        self.pair_bias = nn.Parameter(inverse_softplus(bias).float())  # (K, K)
        # Circular convolution of length n >= 2H-1 leaves the cropped "same" window [H-1, 2H-1) free of wrap-around
        # (aliased terms only land in the discarded part), so the full linear size 3H-2 is not needed.
        self.fft_size = (fast_fft_size(kh), fast_fft_size(kw))
        off_i, off_j = (~torch.eye(k, dtype=torch.bool)).nonzero(as_tuple=True)  # (K*(K-1),) each, i-major order
        self.register_buffer("_pair_i", off_i, persistent=False)
        self.register_buffer("_pair_j", off_j, persistent=False)
        self._spectra: tuple[tuple, Tensor, Tensor] | None = None  # inference cache of :meth:`pair_spectra`

    @torch.no_grad()
    def init_from_histogram(self, histograms: Tensor | np.ndarray) -> None:
        """Initialise e(i|j) from displacement histograms and reset the biases to ``config.bias_init``.

        Each slice is renormalised to sum 1 (empty slices become uniform), ``config.kernel_floor`` is added, and the
        kernels are set so that ``SP(pair_kernels)`` equals the result; the message is then the prior-weighted mean
        of ``SP(h_j)`` over the displacement distribution.

        Args:
            histograms: (K, K, 2H-1, 2W-1) non-negative histograms, e.g. from :func:`displacement_histograms`.
        """
        if isinstance(histograms, Tensor):
            hist = histograms.detach().to(device="cpu", dtype=torch.float64)  # (K, K, KH, KW)
        else:
            hist = torch.from_numpy(np.asarray(histograms, dtype=np.float64))  # (K, K, KH, KW)
        if hist.shape != self.pair_kernels.shape:
            raise ValueError(f"histograms shape {tuple(hist.shape)} != kernels shape {tuple(self.pair_kernels.shape)}")
        if (hist < 0).any():
            raise ValueError("histograms must be non-negative")
        kh, kw = hist.shape[-2:]
        totals = hist.sum(dim=(-2, -1), keepdim=True)  # (K, K, 1, 1)
        prob = torch.where(totals > 0, hist / totals.clamp_min(1e-300), torch.full_like(hist, 1.0 / (kh * kw)))
        target = prob + self.config.kernel_floor  # (K, K, KH, KW)
        self.pair_kernels.copy_(inverse_softplus(target).to(self.pair_kernels))
        bias = torch.full(self.pair_bias.shape, self.config.bias_init, dtype=torch.float64)
        self.pair_bias.copy_(inverse_softplus(bias).to(self.pair_bias))

    def unaries(self, heatmaps: Tensor) -> Tensor:
        """Check the input and return the positive unaries SP(h): (B, K, H, W) -> (B, K, H, W)."""
        expected = (self.config.num_joints, *self.config.heatmap_size)
        if heatmaps.dim() != 4 or tuple(heatmaps.shape[1:]) != expected:
            shape = tuple(heatmaps.shape)
            raise ValueError(f"heatmaps must be (B, {expected[0]}, {expected[1]}, {expected[2]}), got {shape}")
        if self.config.unary == "log_softmax":
            heatmaps = F.log_softmax(heatmaps.flatten(-2), dim=-1).view_as(heatmaps)  # (B, K, H, W)
        elif self.config.unary != "raw":
            raise ValueError(f"unknown unary {self.config.unary!r}; expected log_softmax or raw")
        return F.softplus(heatmaps)

    def pair_spectra(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The positive pairwise kernels SP(e(i|j)) in the frequency domain and the biases SP(b(i|j)), i != j.

        Without gradients (inference) the result is kept until the parameters change (new storage, or an in-place
        update: their version counters), which saves a third of a small batch's time.

        Returns:
            (P, Hf, Wf//2+1) complex kernel spectra and (P,) biases, P = K*(K-1) pairs in i-major order.
        """
        kernels, biases = self.pair_kernels, self.pair_bias
        key = (dtype, kernels.device, kernels.data_ptr(), biases.data_ptr(), kernels._version, biases._version)
        if not torch.is_grad_enabled() and self._spectra is not None and self._spectra[0] == key:
            return self._spectra[1], self._spectra[2]
        pi, pj = self._pair_i, self._pair_j  # (P,) each
        kernels = F.softplus(self.pair_kernels.to(dtype)[pi, pj])  # (P, KH, KW)
        bias = F.softplus(self.pair_bias.to(dtype)[pi, pj])  # (P,)
        kernel_f = torch.fft.rfft2(kernels, s=self.fft_size)  # (P, Hf, Wf//2+1)
        self._spectra = None if torch.is_grad_enabled() else (key, kernel_f, bias)
        return kernel_f, bias

    def forward(self, heatmaps: Tensor) -> Tensor:
        """Run the spatial model.

        Args:
            heatmaps: (B, K, H, W) raw (pre-softplus) detector output, float32 or float64.

        Returns:
            (B, K, H, W) log-beliefs ``log p_i`` in the input dtype (unnormalised).
        """
        unary = self.unaries(heatmaps)  # (B, K, H, W)
        batch, k, height, width = heatmaps.shape
        fh, fw = self.fft_size
        dtype = heatmaps.dtype
        eps = self.config.eps
        pj = self._pair_j  # (P,): the source joint j of each ordered pair (i, j), i != j

        kernel_f, bias = self.pair_spectra(dtype)  # (P, Hf, Wf//2+1), (P,)
        unary_f = torch.fft.rfft2(unary, s=(fh, fw))  # (B, K, Hf, Wf//2+1)
        prod = kernel_f.unsqueeze(0) * unary_f[:, pj]  # (B, P, Hf, Wf//2+1)
        # Inverse FFT split by axis so the row crop happens before the (real) column transform.
        rows = torch.fft.ifft(prod, dim=-2)[..., height - 1 : 2 * height - 1, :]  # (B, P, H, Wf//2+1)
        msg = torch.fft.irfft(rows, n=fw, dim=-1)[..., width - 1 : 2 * width - 1]  # (B, P, H, W)

        terms = torch.log((msg + bias[:, None, None]).clamp_min(eps))  # (B, P, H, W)
        pair = terms.reshape(batch, k, k - 1, height, width).sum(dim=2)  # (B, K, H, W): sum over j != i
        return torch.log(unary.clamp_min(eps)) + pair  # (B, K, H, W)


def spatial_forward_direct(model: SpatialModel, heatmaps: Tensor) -> Tensor:
    """Slow reference of :meth:`SpatialModel.forward` with one grouped ``F.conv2d`` (for tests and benchmarks).

    Args:
        model: The spatial model whose parameters are used.
        heatmaps: (B, K, H, W) raw detector output.

    Returns:
        (B, K, H, W) log-beliefs, equal to ``model(heatmaps)`` up to FFT round-off.
    """
    unary = model.unaries(heatmaps)  # (B, K, H, W)
    batch, k, height, width = heatmaps.shape
    dtype = heatmaps.dtype
    eps = model.config.eps

    kernels = F.softplus(model.pair_kernels.to(dtype))  # (K_i, K_j, KH, KW)
    bias = F.softplus(model.pair_bias.to(dtype))  # (K_i, K_j)
    kh, kw = kernels.shape[-2:]
    # conv2d is a cross-correlation: flip the kernels; group j (input channel j) owns output channels j*K + i.
    weight = kernels.flip(-2, -1).transpose(0, 1).reshape(k * k, 1, kh, kw)  # (K_j * K_i, 1, KH, KW)
    msg = F.conv2d(unary, weight, padding=(height - 1, width - 1), groups=k)  # (B, K_j * K_i, H, W)
    msg = msg.reshape(batch, k, k, height, width).transpose(1, 2)  # (B, K_i, K_j, H, W)

    terms = torch.log((msg + bias[None, :, :, None, None]).clamp_min(eps))  # (B, K_i, K_j, H, W)
    off_diag = 1.0 - torch.eye(k, dtype=dtype, device=heatmaps.device)  # (K_i, K_j)
    pair = (terms * off_diag[None, :, :, None, None]).sum(dim=2)  # (B, K, H, W)
    return torch.log(unary.clamp_min(eps)) + pair
