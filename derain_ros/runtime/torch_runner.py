"""torch runners: the network in eager mode, or wrapped in ``torch.compile``.

Both take any frame size: eager mode as is; ``torch.compile`` (``dynamic=False``)
recompiles for each new size on its first frame (the network's padding branches depend
on the size) and logs it; torch keeps up to its recompile limit (8) of sizes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from derain_ros.errors import ModelError
from derain_ros.runtime.cache import ModelSpec
from derain_ros.runtime.onnx_runner import check_inputs

if TYPE_CHECKING:
    from derain_ros.model import DerainNet

_log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner:
    """The network in torch on one device and dtype.

    The network is moved to ``device``/``dtype`` **in place** (as the engine always did),
    put in eval mode and its gradients switched off.

    Args:
        net: the :class:`~derain_ros.model.DerainNet`.
        device: a torch device (``cpu``, ``cuda:0``).
        dtype: ``fp32``, ``fp16`` (CUDA only) or ``bf16`` (weights and inputs).
        threads: torch intra-op threads (``torch.set_num_threads``: process-wide); 0
            leaves torch's setting alone.
        channels_last: keep the weights in channels-last layout (faster for fp16/bf16
            convolutions on CUDA).
        compile: wrap in ``torch.compile`` (compiled at the first call of each size).
        compile_mode: ``torch.compile``'s ``mode`` (None: default).
        reason: why this back-end was chosen (logged by the caller).
    """

    def __init__(self, net: DerainNet, device: torch.device, dtype: str = "fp32", *,
                 threads: int = 0, channels_last: bool = False, compile: bool = False,
                 compile_mode: str | None = None, reason: str = "") -> None:
        if dtype not in DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        if threads > 0:
            torch.set_num_threads(int(threads))
        self.device = device
        self.dtype = dtype
        self.torch_dtype = DTYPES[dtype]
        self.threads = torch.get_num_threads()
        net = net.to(device=device, dtype=self.torch_dtype).eval()
        if channels_last:
            # torch's overloads of Module.to omit memory_format, which it accepts
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.spec = ModelSpec.from_config(net.config)
        self.channels_last = channels_last
        self.backend = "torch_compile" if compile else "torch"
        layout = "/channels_last" if channels_last else ""
        self.name = f"{self.backend}/{device}/{dtype}{layout}"
        self.reason = reason
        self.rebuilds = 0  # recompilations for a new frame size (torch_compile)
        self._sizes: set[tuple[int, int]] = set()
        self._module: Any = (torch.compile(net, mode=compile_mode, dynamic=False)
                             if compile else net)

    def prepare(self, height: int, width: int) -> None:
        """Run once at ``height`` x ``width`` (compiles with ``torch.compile``)."""
        frames, events = self.net.example_inputs(height, width, device=self.device,
                                                 dtype=self.torch_dtype)
        self(frames, events)

    def _tensor(self, x: Any) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t.to(device=self.device, dtype=self.torch_dtype, non_blocking=True)

    def __call__(self, frames: Any, events: Any | None) -> tuple[np.ndarray, np.ndarray]:
        """``(background, rain)``, float32 ``[1, C, H, W]`` numpy; see :mod:`derain_ros.runtime`."""
        check_inputs(self.spec, frames, events)
        size = (int(frames.shape[-2]), int(frames.shape[-1]))
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self._module(self._tensor(frames),
                                   None if events is None else self._tensor(events))
                background = out.background.float().clamp_(0.0, 1.0).cpu().numpy()
                rain = out.rain.float().cpu().numpy()
        except ModelError:
            raise
        except RuntimeError as err:
            raise ModelError(f"{self.name}: inference failed on a {size[1]}x{size[0]} frame: "
                             f"{err}") from err
        if size not in self._sizes:
            if self._sizes and self.backend == "torch_compile":
                self.rebuilds += 1
                _log.info("frame size %dx%d: torch.compile recompiled for it in %.1f s",
                          size[1], size[0], time.perf_counter() - start)
            self._sizes.add(size)
        return background, rain


__all__ = ["DTYPES", "TorchRunner"]
