"""The choice of compute backend by device name (the factory of :class:`~.contract.TileBackend`).

Only :mod:`.api` imports this module; backends import :mod:`.contract`, never the factory.
"""

from __future__ import annotations

from actgeo_assets.lib.graph.contract import TileBackend


def resolve_backend(device: str, precision: str) -> tuple[TileBackend, str]:
    """The backend for ``device`` and the GEMM precision it runs (``auto``: tf32 on CUDA, fp32 elsewhere)."""
    if precision not in ("auto", "fp32", "tf32"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'tf32', got {precision!r}")
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            device = "cpu"
    from actgeo_assets.lib.graph.backend_numpy import NumpyBackend
    from actgeo_assets.lib.graph.backend_torch import TorchBackend

    if device == "cpu":
        if precision == "tf32":
            raise ValueError("precision 'tf32' needs a CUDA device")
        return NumpyBackend(), "fp32"
    if device == "torch-cpu":
        return TorchBackend("cpu", "fp32"), "fp32"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but torch.cuda.is_available() is False")
        prec = "tf32" if precision == "auto" else precision
        return TorchBackend(device, prec), prec
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'torch-cpu', got {device!r}")


