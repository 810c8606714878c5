"""CUDA correctness checks of the GPU path (docs/gpu.md); run them on a machine with a GPU:

    python scripts/check_gpu.py                  # ~1 minute; exit status 1 if a check fails

1. The Triton selective scan on CUDA against the numba CPU kernel on the same values: fp32 and bf16
   inputs, an initial state, packed-sample resets, a length that is not a multiple of the
   checkpoint chunk, the released width (8192 channels, 16 states); values, last state and every
   gradient.
2. The Triton causal conv and decode step on CUDA against their torch versions on the CPU.
3. ``greedy_generate`` on CUDA: the static cache with the step replayed as a CUDA graph against the
   dynamic cache, a left-padded batch of 2, for the tiny preset with a dense feed-forward (as the 9B)
   and as is (mixture of experts): the same tokens in fp32; in bf16 the number of tokens before the
   first difference is printed (rounding flips near-ties of a random model). Prints whether the
   step ran as a CUDA graph.

``--device cpu`` runs the same checks on CPU tensors under triton's interpreter at small shapes
(that is how the script itself is tested without a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def scan_case(length, channels, n_state, dtype, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, channels, generator=g)
    dt = torch.rand(2, length, channels, generator=g) * 0.1
    A = -torch.rand(channels, n_state, generator=g) * 2 - 0.1
    B, C = torch.randn(2, 2, length, n_state, generator=g)
    h0 = torch.randn(2, channels, n_state, generator=g)
    resets = torch.rand(2, length, generator=g) < 0.01
    return [t.to(dtype) for t in (x, dt)] + [A] + [t.to(dtype) for t in (B, C)] + [h0], resets


def compare(name, got, want, tolerance):
    error = (got.float().cpu() - want.float().cpu()).abs().max().item()
    scale = want.float().abs().max().item()
    ok = error <= tolerance * max(1.0, scale)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {error:.3g} (scale {scale:.3g})")
    return ok


def check_scan(device, length, channels, n_state) -> bool:
    import torch

    from longllava.core import selective_scan as scan

    ok = True
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        inputs, resets = scan_case(length, channels, n_state, dtype)
        g = torch.Generator().manual_seed(1)
        grad_y, grad_h = torch.randn(2, length, channels, generator=g), torch.randn(2, channels, n_state, generator=g)
        results = {}
        for kernels, where in (("triton", device), ("numba", "cpu")):
            scan.KERNELS = kernels
            # the kernel gets the inputs' dtype on the device; numba the same values upcast, on the CPU
            leaves = [(t if kernels == "triton" else t.float()).to(where, copy=True).requires_grad_() for t in inputs]
            y, h_last = scan.selective_scan(*leaves[:5], resets.to(where), leaves[5])
            ((y.float() * grad_y.to(where)).sum() + (h_last.float() * grad_h.to(where)).sum()).backward()
            results[kernels] = [y, h_last] + [t.grad for t in leaves]
        scan.KERNELS = "auto"
        names = ("y", "last state", "grad x", "grad dt", "grad A", "grad B", "grad C", "grad h0")
        for name, got, want in zip(names, results["triton"], results["numba"]):
            ok &= compare(f"scan {str(dtype)[6:]} {name}", got, want, tolerance)
    return ok


def check_conv_and_step(device) -> bool:
    import torch

    from longllava.core import mamba, selective_scan as scan

    g = torch.Generator().manual_seed(2)
    xin, weight, bias = torch.randn(2, 3 + 300, 256, generator=g), torch.randn(256, 4, generator=g), torch.randn(256, generator=g)
    resets = torch.rand(2, 300, generator=g) < 0.02
    segments = torch.nn.functional.pad(resets.long().cumsum(-1), (3, 0))
    ok = True
    outputs = {}
    for kernels, where in (("triton", device), ("torch", "cpu")):
        scan.KERNELS = kernels
        outputs[kernels] = mamba.causal_conv(xin.to(where), segments.to(where), weight.to(where), bias.to(where))
    ok &= compare("conv", outputs["triton"], outputs["torch"], 1e-5)
    (x, dt, A, B, C, h0), _ = scan_case(1, 256, 16, torch.float32, seed=3)
    skip, gate = torch.randn(256, generator=g), torch.randn(2, 256, generator=g)
    states = {}
    for kernels, where in (("triton", device), ("torch", "cpu")):
        scan.KERNELS = kernels
        states[kernels] = h0.clone().to(where)
        args = [t.to(where) for t in (x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], skip, gate)]
        outputs[kernels] = mamba.mamba_step(*args, states[kernels])
    scan.KERNELS = "auto"
    ok &= compare("step output", outputs["triton"], outputs["torch"], 1e-5)
    ok &= compare("step state", states["triton"], states["torch"], 1e-5)
    return ok


def check_generation(device) -> bool:
    import torch

    from longllava.core.configuration import tiny_config
    from longllava.core.modeling import LongLlavaForConditionalGeneration

    ok = True
    for experts in (1, 4):
        config = tiny_config(256)
        config.text_config.num_experts = experts
        config.text_config.num_experts_per_tok = min(2, experts)
        torch.manual_seed(0)
        model = LongLlavaForConditionalGeneration(config).eval()
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, 256, (2, 40), generator=g)
        mask = torch.ones_like(ids)
        ids[1, :9], mask[1, :9] = 0, 0
        for dtype in (torch.float32, torch.bfloat16):
            model.to(device=device, dtype=dtype)
            run = dict(attention_mask=mask.to(device), max_new_tokens=24, eos_token_id=-1)
            dynamic = model.greedy_generate(ids.to(device), static_cache=False, **run)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                static = model.greedy_generate(ids.to(device), static_cache=True, **run)
            eager = [str(w.message) for w in caught if "not capturable" in str(w.message)]
            path = "eager: " + eager[0][:200] if eager else ("CUDA graph" if device.startswith("cuda") else "eager (CPU)")
            differ = (dynamic != static).any(0).nonzero()
            agree = int(differ[0]) if len(differ) else dynamic.shape[1]
            if dtype == torch.float32:
                ok &= agree == dynamic.shape[1]
                verdict = "ok  " if agree == dynamic.shape[1] else "FAIL"
            else:  # bf16: the two paths' attention runs over different key lengths, so their logits
                verdict = "info"  # differ by bf16 rounding, which can flip a random model's near-ties
            print(f"{verdict} greedy_generate experts={experts} {str(dtype)[6:]}: static == dynamic for "
                  f"{agree}/{dynamic.shape[1]} tokens; static step: {path}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (triton's interpreter, small shapes)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are decorated
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the interpreter checks", file=sys.stderr)
        return 2
    from longllava.core import triton_scan

    if args.device == "cpu":
        triton_scan.CHUNK, triton_scan.BLOCK_D = 16, 32
        shape = (37, 40, 5)
    else:
        shape = (1000, 8192, 16)
    ok = check_scan(args.device, *shape)
    ok &= check_conv_and_step(args.device)
    ok &= check_generation(args.device)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
