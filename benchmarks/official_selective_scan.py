"""mamba_ssm's selective-scan CUDA kernels, loaded through ctypes: the reference of
`python -m benchmarks.selective_scan --official DIR`.

DIR is what `scripts/official_ss_package.sh` builds (.device/official_ss: mamba's
csrc/selective_scan at a pinned revision and our launcher, benchmarks/official_ss/launch.cu, as
libmamba_selective_scan.so). Nothing of mamba_ssm is in this repository.

`OfficialSelectiveScan.layout` turns our (batch, seqlen, channels) inputs into mamba_ssm's layout
(u, delta (batch, channels, seqlen); B, C (batch, 1, dstate, seqlen)), once, outside any timing;
`forward` and `backward` then do what mamba_ssm's `selective_scan_cuda.fwd` / `.bwd` do for
bf16 inputs, variable B and C, one group, no z: allocate the outputs (the backward zeroes the
atomically accumulated dA, dB, dC, dD, ddelta_bias and casts dB, dC back to bf16), launch one
kernel.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

LIBRARY = "libmamba_selective_scan.so"


class OfficialSelectiveScan:
    def __init__(self, folder: str | Path):
        path = Path(folder) / LIBRARY
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: build it with `bash scripts/official_ss_package.sh {folder}`")
        self.lib = ctypes.CDLL(str(path))
        p, i = ctypes.c_void_p, ctypes.c_int
        self.lib.hades_official_ss_fwd.argtypes = [i] * 4 + [p] * 7 + [i, p, p, p]
        self.lib.hades_official_ss_bwd.argtypes = [i] * 4 + [p] * 7 + [i] + [p] * 10
        self.lib.hades_official_ss_error.restype = ctypes.c_char_p
        self.provenance = (Path(folder) / "PROVENANCE.txt").read_text().splitlines()[0] \
            if (Path(folder) / "PROVENANCE.txt").is_file() else str(path)

    @staticmethod
    def layout(u, delta, A, B, C, D, delta_bias=None) -> dict:
        """Our (batch, seqlen, channels) / (batch, seqlen, dstate) inputs in mamba_ssm's layout."""
        assert u.dtype == delta.dtype == B.dtype == C.dtype == torch.bfloat16, "the library is built for bf16 inputs"
        return dict(u=u.transpose(1, 2).contiguous(), delta=delta.transpose(1, 2).contiguous(),
                    A=A.float().contiguous(), B=B.transpose(1, 2).unsqueeze(1).contiguous(),
                    C=C.transpose(1, 2).unsqueeze(1).contiguous(), D=D.float().contiguous(),
                    delta_bias=None if delta_bias is None else delta_bias.float().contiguous())

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"mamba_ssm selective scan {what}: {self.lib.hades_official_ss_error(rc).decode()}")

    @staticmethod
    def _ptr(t):
        return None if t is None else t.data_ptr()

    def _sizes(self, o):
        b, c, t = o["u"].shape
        return b, c, t, o["A"].shape[1]

    def _args(self, o):
        return [self._ptr(o[k]) for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]

    def forward(self, o: dict, softplus: bool = False):
        """(out (batch, channels, seqlen) bf16, x: the chunk states the backward reads)."""
        b, c, t, n = self._sizes(o)
        out = torch.empty_like(o["delta"])
        x = torch.empty(b, c, (t + 2047) // 2048, 2 * n, device=out.device, dtype=torch.float32)
        self._check(self.lib.hades_official_ss_fwd(b, c, t, n, *self._args(o), int(softplus), out.data_ptr(),
                                                   x.data_ptr(), torch.cuda.current_stream().cuda_stream), "forward")
        return out, x

    def backward(self, o: dict, x, dout, softplus: bool = False):
        """(du, ddelta, dA, dB, dC, dD, ddelta_bias) in mamba_ssm's layout (dB, dC bf16)."""
        b, c, t, n = self._sizes(o)
        du, ddelta = torch.empty_like(o["u"]), torch.empty_like(o["delta"])
        dA = torch.zeros_like(o["A"])
        dB = torch.zeros_like(o["B"], dtype=torch.float32)
        dC = torch.zeros_like(o["C"], dtype=torch.float32)
        dD = torch.zeros_like(o["D"])
        dbias = None if o["delta_bias"] is None else torch.zeros_like(o["delta_bias"])
        dout = dout.contiguous()
        self._check(self.lib.hades_official_ss_bwd(
            b, c, t, n, *self._args(o), int(softplus), x.data_ptr(), dout.data_ptr(), du.data_ptr(),
            ddelta.data_ptr(), dA.data_ptr(), dB.data_ptr(), dC.data_ptr(), dD.data_ptr(), self._ptr(dbias),
            torch.cuda.current_stream().cuda_stream), "backward")
        return du, ddelta, dA, dB.to(o["B"].dtype), dC.to(o["C"].dtype), dD, dbias

    @staticmethod
    def ours_layout(grads: tuple) -> tuple:
        """The backward's gradients in our layout: du, ddelta (b, t, c); dB, dC (b, t, n)."""
        du, ddelta, dA, dB, dC, dD, dbias = grads
        return (du.transpose(1, 2), ddelta.transpose(1, 2), dA, dB.squeeze(1).transpose(1, 2),
                dC.squeeze(1).transpose(1, 2), dD, dbias)
