"""xECGNet's VGG-like feature extractor and the padding-mask helpers every model shares.

Masks are ``B x T`` bool tensors, True where a sample is real and False where it is padding.
``mask=None`` means "no padding" and runs the plain network (the authors' code path).

How padding is kept out of the result: padded positions are set to zero before every
convolution, so a real sample next to the padding sees exactly the zeros that a
same-padded convolution sees at the end of the unpadded signal; and a pooled position is
valid only if its *whole* pooling window is real, so the number of valid positions is
``L // 3`` per pooling, the floor PyTorch applies to the unpadded signal. With padding at the
end (the ``bucket`` policy) the valid part of every feature map is therefore the unpadded
network's feature map, for any real length ``L``. With padding at the start (the paper's
zero-padding to 72,000) positions that touch the padding are invalid, but the pooling grid is
anchored at the padded start, so features are those of a shifted signal, not identical.
BatchNorm layers (:class:`MaskedBatchNorm1d`) compute their training-mode batch statistics over
valid positions only, so padding changes neither a training step nor the running statistics.
Under ``Trainer(sync_batchnorm=True)`` they become :class:`MaskedSyncBatchNorm1d`, whose
statistics cover the valid positions of all processes (nothing to wire: importing this module
registers the hook that keeps the conversion masked, :func:`_keep_masked_norms`).
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import register_module_module_registration_hook

from xecg.classes import NUM_LEADS

Activation = Literal["relu", "none"]

POOL = 3
#: Conv channels per block; a MaxPool1d(3, stride 3) follows each of the five blocks.
BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 256, 128),
)
#: Overall time downsampling of the feature extractor: T -> T // 243.
DOWNSAMPLE = POOL ** len(BLOCKS)


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, rounded, at least 8."""
    return max(8, round(channels * width))


def make_activation(name: Activation) -> nn.Module:
    """``relu`` -> ReLU; ``none`` -> identity (the authors' code has no activations there)."""
    if name == "relu":
        return nn.ReLU()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation must be 'relu' or 'none', got {name!r}")


def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """``B x C x T`` features with padded positions (mask False) set to zero; x if mask is None."""
    return x if mask is None else x * mask.unsqueeze(1).to(x.dtype)


def max_pool(x: Tensor, length_generic: bool = False) -> Tensor:
    """``MaxPool1d(3, stride 3)`` over the last dimension, ``... x T`` -> ``... x T // 3``.

    ``length_generic`` under torch.compile (why: :func:`use_length_generic_layers`): the
    maximum of the three strided views of each window, where compile fixes ``F.max_pool1d``'s
    length. Same values; where two samples of a window tie, the gradient is split between them
    rather than given to one. Otherwise max_pool1d, one kernel (in eager the views cost a CPU
    training step 10-15% more).
    """
    if not (length_generic and torch.compiler.is_compiling()):
        return F.max_pool1d(x, POOL, POOL)
    length = x.shape[-1] // POOL * POOL
    first, second, third = (x[..., i:length:POOL] for i in range(POOL))
    return torch.maximum(torch.maximum(first, second), third)


def mask_run(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``B x T`` mask -> (start, end), each ``B x 1``: the row's run of real samples is
    ``[start, end)`` (start 0 and end 0 for an all-padding row). Each row's real samples must be
    one run (padding at the start, the end or both, which is what every length policy makes;
    :func:`check_input` checks it on the CPU)."""
    start = mask.int().argmax(-1, keepdim=True)
    return start, start + mask.sum(-1, keepdim=True)


def pooled_mask(start: Tensor, end: Tensor, length: int, scale: int) -> Tensor:
    """The mask after pooling by ``scale`` (a power of 3), ``B x length``: valid where the whole
    window of ``scale`` samples lies in the run ``[start, end)`` of :func:`mask_run`."""
    window = torch.arange(length, device=start.device)
    return (window * scale >= start) & ((window + 1) * scale <= end)


def downsample_mask(mask: Tensor, levels: int = 1) -> Tensor:
    """Pooled mask, ``B x T`` -> ``B x T // 3**levels``: valid where the whole window is real.

    Computed from the run's ends (:func:`mask_run`) rather than by pooling the mask: it keeps
    the length symbolic under torch.compile, and inductor's vectorised CPU code (2.13) gave
    wrong gradients when the backward pass recomputed strided views of the mask (4% at 3,888
    samples).
    """
    scale = POOL ** levels
    return pooled_mask(*mask_run(mask), mask.shape[-1] // scale, scale)


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Global average pooling over the valid positions, ``B x C x T`` -> ``B x C``.

    A record without any valid position (shorter than 243 samples) pools to zeros.
    """
    if mask is None:
        return x.mean(dim=-1)
    weight = mask.unsqueeze(1).to(x.dtype)
    return (x * weight).sum(dim=-1) / weight.sum(dim=-1).clamp_min(1)


def _masked_norm(bn: _BatchNorm, x: Tensor, mask: Tensor | None,
                 sync: tuple[dist.ProcessGroup, int] | None = None) -> Tensor:
    """Training-mode BatchNorm of ``B x C x T`` (or ``B x C``) features with statistics over the
    valid positions of the ``B x T`` mask (None: all valid), of this process or, with ``sync``
    (group, size), of every process in the group; updates ``bn``'s running statistics.
    Statistics in float32, also under bf16 autocast, as BatchNorm does."""
    x3 = x if x.dim() == 3 else x.unsqueeze(-1)  # B x C -> B x C x 1
    # w is float32, so the function's arithmetic on a 16-bit x is float32 from its first op.
    w = (torch.ones_like(x3[:, :1], dtype=torch.float32) if mask is None
         else mask.unsqueeze(1).to(torch.float32))
    y, mean, var = _MaskedBatchNormFunction.apply(x3, w, bn.weight, bn.bias, bn.eps,
                                                  *(sync or (None, 1)))
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = (bn.momentum if bn.momentum is not None
                        else 1.0 / float(bn.num_batches_tracked))
            # one kernel for both (on a GPU each small op is a launch, and bucketed steps are short)
            torch._foreach_lerp_((bn.running_mean, bn.running_var), (mean, var), momentum)
    return y.reshape(x.shape)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics count only valid positions of a ``B x T``
    mask (True = real); without a mask it is plain BatchNorm1d, and in eval mode plain
    BatchNorm1d with padded positions set to zero.

    ``forward(x: B x C x T, mask: B x T | None) -> B x C x T``, zero at padded positions when
    a mask is given (so the layers after it need not mask again). Under
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` (what ``Trainer(sync_batchnorm=True)`` runs)
    it becomes a :class:`MaskedSyncBatchNorm1d`, not a plain ``SyncBatchNorm``.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return super().forward(x)
        if not self.training:
            return apply_mask(super().forward(x), mask)
        return _masked_norm(self, x, mask)


class _MaskedBatchNormFunction(torch.autograd.Function):
    """BatchNorm with statistics over the valid positions of this process or (``group``) of
    every process in ``group``. One function with a hand-written backward for both: it keeps
    only ``xhat`` for the backward pass, where autograd through the masked statistics kept about
    six ``B x C x T`` intermediates and ran as many elementwise kernels (the masked layers made
    a bucketed GPU epoch 2.2x slower than an unmasked one, README "Benchmarks").

    Forward: with a group, each process all-gathers its valid count ``n_r``, mean and sum of squared
    deviations (``1 + 2C`` numbers) and combines them exactly (Chan et al.'s pairwise formula,
    no cancellation). Backward: like ``torch.nn.SyncBatchNorm``, one all-reduce of the
    per-channel sums of ``dL/dy`` and ``dL/dy * xhat`` over all processes, because every
    process's outputs depend on the shared mean and variance:
    ``dx = invstd * (h - w / N * (sum h + xhat * sum h xhat))`` with ``h = dL/dy * weight``.
    Weight and bias gradients are this process's own (DDP reduces them, as for any parameter).
    Its ``C``-sized arithmetic is written in as few ops as it takes: a bucketed step is short,
    and on a GPU each op is a launch (a tiny masked step cost twice an unmasked one on a CPU).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, weight: Tensor | None, bias: Tensor | None,
                eps: float, group: dist.ProcessGroup | None, world_size: int
                ) -> tuple[Tensor, Tensor, Tensor]:
        """x: ``B x C x T`` (float32, or 16-bit under autocast); w: ``B x 1 x T`` float32, 1
        at valid positions. Returns y ``B x C x T`` in x's type (zero at padded positions),
        the global mean ``C`` and the unbiased variance ``C`` (what the running statistics
        take), both float32."""
        # Two float32 B x C x T tensors are kept (xc, which becomes xhat in place, and y) and
        # one freed at once; every other step works in place: on a GPU each elementwise kernel
        # is a pass over memory, on a CPU each new tensor pays its page faults.
        channels = x.shape[1]
        n_local = w.sum()
        n = n_local.clamp_min(1.0)  # valid positions here; with a group, everywhere (below)
        xc = x * w  # float32 (w is), zero at padding
        mean_local = xc.sum((0, 2)).div_(n)
        xc.addcmul_(w, mean_local.unsqueeze(-1), value=-1.0)  # centred where valid, 0 at padding
        # (vector_norm would keep no squares, but on a CPU it sums 9 million of them with a
        # 0.2% error, where sum's 6e-8)
        m2 = xc.square().sum((0, 2))
        mean = mean_local
        if group is not None:
            stats = torch.cat([n_local.reshape(1), mean_local, m2])
            gathered = [torch.empty_like(stats) for _ in range(world_size)]
            dist.all_gather(gathered, stats, group=group)
            counts, means, m2s = torch.stack(gathered).split([1, channels, channels], dim=1)
            n = counts.sum().clamp_min(1.0)
            mean = (counts * means).sum(0) / n
            m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
            xc.addcmul_(w, (mean_local - mean).unsqueeze(-1))  # centred on the global mean
        invstd = torch.rsqrt(m2 / n + eps)
        xhat = xc.mul_(invstd.unsqueeze(-1))
        scale = weight if weight is not None else torch.ones_like(invstd)
        if bias is None:
            y = xhat * scale.unsqueeze(-1)
        else:
            y = torch.addcmul(bias.unsqueeze(-1), xhat, scale.unsqueeze(-1))  # float32
        # 0 at padding. Eagerly in place, which spares a new B x C x T tensor; compiled not,
        # nor through a .to() of y's own dtype (an alias of it): torch 2.11's dynamo gives x,
        # weight and bias zero gradients for either (inductor fuses the ops anyway).
        y = y * w if torch.compiler.is_compiling() else y.mul_(w)
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        # The running variance is unbiased, over the valid positions of every process.
        var_unbiased = m2 / (n - 1.0).clamp_min(1.0)
        ctx.save_for_backward(xhat, w, scale, invstd, n)
        ctx.group = group
        ctx.mark_non_differentiable(mean, var_unbiased)
        ctx.set_materialize_grads(False)  # no zero tensors for the statistics' gradients
        return y, mean, var_unbiased

    @staticmethod
    def backward(ctx, grad_y: Tensor, *_: Tensor):
        xhat, w, scale, invstd, n = ctx.saved_tensors
        # y = (xhat * weight + bias) * w, and xhat is zero at padding (so is xhat * grad_y's
        # part there): only valid positions count in either sum.
        sum_dy = (grad_y * w).sum((0, 2))
        sum_dy_xhat = (grad_y * xhat).sum((0, 2))
        grad_weight = sum_dy_xhat if ctx.needs_input_grad[2] else None  # False for no weight
        grad_bias = sum_dy if ctx.needs_input_grad[3] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = torch.stack([sum_dy, sum_dy_xhat])  # a copy: the gradients stay this rank's
            if ctx.group is not None:
                dist.all_reduce(sums, group=ctx.group)  # sums of dL/dy (and * xhat), all ranks
            # dx = w * a * (grad_y - (sum dy + xhat * sum dy xhat) / N), a = invstd * weight:
            # one new tensor, the rest in place.
            a = invstd * scale
            b, c = (sums * a.div(n).neg_()).unbind()  # C each, negated
            grad_x = torch.addcmul(b.unsqueeze(-1), grad_y, a.unsqueeze(-1))  # float32
            grad_x = grad_x.addcmul_(xhat, c.unsqueeze(-1)).mul_(w).to(grad_y.dtype)
        return grad_x, None, grad_weight, grad_bias, None, None, None


_BATCHNORM_TAKES_BIAS = "bias" in inspect.signature(_BatchNorm.__init__).parameters


class MaskedSyncBatchNorm1d(MaskedBatchNorm1d):
    """:class:`MaskedBatchNorm1d` with training-mode statistics over the valid positions of all
    processes in ``process_group`` (default: the whole world).

    ``forward(x: B x C x T, mask: B x T | None) -> B x C x T``. Every process runs the same
    collectives whatever its mask: ``mask=None`` counts every position as valid. Without an
    initialised process group of more than one process, and in eval mode, it computes exactly
    what MaskedBatchNorm1d does. ``convert_sync_batchnorm`` makes it from a MaskedBatchNorm1d
    (see :func:`_keep_masked_norms`). It is not an ``nn.SyncBatchNorm``: DDP refuses those on
    CPU, and this layer also runs on CPU (gloo). Hence Lightning's revert after fit leaves it
    in place, which is harmless: outside distributed training it is the masked layer.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: dist.ProcessGroup | None = None, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        # torch 2.13's BatchNorm takes ``bias``; 2.11's (the GPU machines') does not, and there
        # an affine layer always has one
        if not (_BATCHNORM_TAKES_BIAS or bias or not affine):
            raise ValueError(f"bias=False: torch {torch.__version__}'s BatchNorm has no such "
                             "option (torch 2.13's has)")
        extra = {"bias": bias} if _BATCHNORM_TAKES_BIAS else {}
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, **extra)
        self.process_group = process_group

    def _sync_group(self) -> tuple[dist.ProcessGroup, int] | None:
        """The process group and its size when this training step must synchronise, else None."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group or dist.group.WORLD
        world_size = dist.get_world_size(group)
        return (group, world_size) if world_size > 1 else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        sync = self._sync_group()
        if sync is None:
            return super().forward(x, mask)
        self._check_input_dim(x)
        return _masked_norm(self, x, mask, sync)

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm, process_group: dist.ProcessGroup | None = None
                       ) -> MaskedSyncBatchNorm1d:
        """A MaskedSyncBatchNorm1d sharing ``bn``'s parameters and buffers."""
        out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  process_group, bias=bn.bias is not None)
        _share_state(bn, out)
        return out


def _share_state(src: _BatchNorm, dst: _BatchNorm) -> None:
    """``dst`` takes ``src``'s parameters, buffers, mode and qconfig (the same tensors), as
    ``convert_sync_batchnorm`` does."""
    if src.affine:
        with torch.no_grad():
            dst.weight = src.weight
            dst.bias = src.bias
    dst.running_mean = src.running_mean
    dst.running_var = src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.training = src.training
    if hasattr(src, "qconfig"):
        dst.qconfig = src.qconfig


def _same_layer(old: _BatchNorm, new: _BatchNorm) -> bool:
    """Whether ``new`` is a conversion of ``old``: it holds the very same parameter or buffer."""
    pairs = ((old.weight, new.weight), (old.running_mean, new.running_mean))
    if all(a is None and b is None for a, b in pairs):
        return old.num_features == new.num_features
    return any(a is not None and a is b for a, b in pairs)


def _keep_masked_norms(parent: nn.Module, name: str, new: nn.Module) -> nn.Module | None:
    """Global module-registration hook: keeps masked BatchNorm masked under synchronisation.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` (Lightning's ``TorchSyncBatchNorm``, i.e.
    ``Trainer(sync_batchnorm=True)``) replaces every BatchNorm, masked ones included, by a
    plain ``SyncBatchNorm`` whose forward takes no mask, through ``parent.add_module(name,
    new)``. When the layer being replaced is a MaskedBatchNorm1d and ``new`` is a plain
    SyncBatchNorm sharing its tensors, register a :class:`MaskedSyncBatchNorm1d` (same tensors,
    same process group) instead. Every other registration, plain BatchNorm layers included, is
    left alone.
    """
    old = parent._modules.get(name)
    if (isinstance(old, MaskedBatchNorm1d) and type(new) is nn.SyncBatchNorm
            and _same_layer(old, new)):
        return MaskedSyncBatchNorm1d.from_batchnorm(new, new.process_group)
    return None


register_module_module_registration_hook(_keep_masked_norms)


class _Conv1dFunction(torch.autograd.Function):
    """``F.conv1d`` (stride 1, dilation 1, one group) with a backward that torch.compile keeps
    dynamic in the length. Inductor (torch 2.13) lowers ``convolution_backward``'s input
    gradient with strides fixed to integers, which compiled the network again for every
    bucket length; here the input gradient is a transposed convolution (the same arithmetic,
    lowered like a forward convolution) and only the weight gradient, whose layout does not
    depend on the length, goes through ``convolution_backward``. Under autocast the operands
    are cast here, once, so that the backward needs no autocast state."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        xc, wc = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.padding, ctx.dtypes = padding, (x.dtype, weight.dtype)
        with torch.autocast(device, enabled=False):
            return F.conv1d(xc, wc, None if bias is None else bias.to(dtype), padding=padding)

    @staticmethod
    def backward(ctx, grad: Tensor):
        xc, wc = ctx.saved_tensors
        grad = grad.to(xc.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv_transpose1d(grad, wc, padding=ctx.padding).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, xc, wc, None, [1], [ctx.padding], [1], False, [0], 1,
                [False, True, False])[1].to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:  # False when there is no bias
            grad_b = grad.sum((0, 2)).to(ctx.dtypes[1])
        return grad_x, grad_w, grad_b, None


def conv1d(layer: nn.Conv1d, x: Tensor, length_generic: bool = False) -> Tensor:
    """``layer(x)``, ``B x c_in x T`` -> ``B x c_out x T`` (same padding, stride 1).
    ``length_generic`` under torch.compile: as :class:`_Conv1dFunction`, so that one compiled
    graph serves every length; otherwise the layer's own call (module hooks, and the faster
    compiled code for one length)."""
    if not (length_generic and torch.compiler.is_compiling()):
        return layer(x)
    return _Conv1dFunction.apply(x, layer.weight, layer.bias, layer.padding[0])


def use_length_generic_layers(net: nn.Module, on: bool = True) -> None:
    """Make ``net``'s pooling and convolutions keep the length symbolic under torch.compile,
    for a network compiled with ``dynamic=True`` (the ``bucket`` policy: a length per batch).

    torch 2.13 fixed the length at ``F.max_pool1d`` (dynamo) and at every convolution's input
    gradient (inductor), so a compiled XECGNet was compiled again for every bucket length, and
    after eight torch ran the rest eagerly. A network compiled for one length (``pad``,
    ``crop``) keeps the native layers, whose compiled CPU code was 17% faster (README
    "Benchmarks"). Eager runs are the same either way. Sets ``length_generic`` on every layer
    that has it.
    """
    for module in net.modules():
        if hasattr(module, "length_generic"):
            module.length_generic = on


class ConvBN(nn.Module):
    """Conv1d (same padding) -> masked BatchNorm -> activation: ``B x c_in x T`` ->
    ``B x c_out x T``, zero at padded positions when a mask is given (the norm's output is, and
    both activations keep zeros)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True,
                 activation: Activation = "none") -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)
        self.norm = MaskedBatchNorm1d(c_out)
        self.act = make_activation(activation)
        self.length_generic = False  # see use_length_generic_layers

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.act(self.norm(conv1d(self.conv, x, self.length_generic), mask))


class FeatureExtractor(nn.Module):
    """Conv1d(k=3, same) + BatchNorm (+ activation) layers in five pooled blocks.

    ``B x in_leads x T`` (and an optional ``B x T`` mask) -> ``B x out_channels x T // 243``
    (and the pooled ``B x T // 243`` mask, None when no mask was given).
    ``width`` scales every channel count (1.0 is the paper's network).
    """

    def __init__(self, in_leads: int = NUM_LEADS, width: float = 1.0,
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        c_in = in_leads
        for block in BLOCKS:
            layers = nn.ModuleList()
            for channels in block:
                layers.append(ConvBN(c_in, scaled(channels, width), 3, activation=activation))
                c_in = scaled(channels, width)
            self.blocks.append(layers)
        self.out_channels = c_in
        self.length_generic = False  # see use_length_generic_layers

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = apply_mask(x, mask)
        run = None if mask is None else mask_run(mask)  # each block's mask comes from it
        for level, layers in enumerate(self.blocks, 1):
            for layer in layers:
                x = layer(x, mask)  # zero at padding: what the next convolution must see
            x = max_pool(x, self.length_generic)
            if run is not None:
                mask = pooled_mask(*run, x.shape[-1], POOL ** level)
                x = apply_mask(x, mask)
        return x, mask


def check_input(x: Tensor, mask: Tensor | None, in_leads: int) -> Tensor | None:
    """Validate a ``B x in_leads x T`` batch and its ``B x T`` mask; returns the mask as bool,
    or None when it marks no padding."""
    if x.dim() != 3 or x.shape[1] != in_leads:
        raise ValueError(f"input must be B x {in_leads} x T, got shape {tuple(x.shape)}")
    if x.shape[2] < DOWNSAMPLE:
        raise ValueError(f"input length {x.shape[2]} is shorter than {DOWNSAMPLE} samples, "
                         "the network's downsampling factor")
    if mask is None:
        return None
    if mask.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"mask must be B x T = {(x.shape[0], x.shape[2])}, "
                         f"got shape {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    if mask.device.type != "cpu" or torch.compiler.is_compiling():
        # Asking an accelerator whether the mask is all True would make every step wait for it
        # (a host-device sync) and break a compiled graph; the loader answers it on the host
        # (the batch's ``padded`` flag) and passes no mask when nothing is padded.
        return mask
    # No padding in the batch: the plain (faster, fused BatchNorm) path gives the same result.
    if bool(mask.all()):
        return None
    run_starts = mask[:, 0].int() + (mask[:, 1:] & ~mask[:, :-1]).sum(-1)
    if bool((run_starts > 1).any()):  # what mask_run assumes
        raise ValueError("each row of the mask must mark one run of real samples "
                         "(padding at the start or the end), not several")
    return mask
