"""Check a ``--device`` choice at once, before a command does any work.

``derain-ros demo --device cuda`` on a machine without CUDA used to synthesise a clip,
start the node and only then fail inside it; :func:`require_device` fails first, with
what is installed and what to use instead. torch is imported only for a CUDA choice.
"""

from __future__ import annotations

from derain_ros.errors import ConfigError

__all__ = ["require_device"]


def require_device(device: str) -> None:
    """Raise :class:`ConfigError` unless ``device`` (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``) can be used here."""
    if device in ("auto", "cpu"):
        return
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        build = (f"built with CUDA {torch.version.cuda}" if torch.version.cuda
                 else "a CPU-only build")
        raise ConfigError(f"--device {device}: CUDA is not available on this machine "
                          f"(torch {torch.__version__}, {build}); use --device cpu, or auto "
                          f"(CUDA when present)")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s) "
                          f"(cuda:0 to cuda:{count - 1})")
