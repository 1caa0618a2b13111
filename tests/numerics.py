"""Float comparisons that hold on any CPU, thread count and oneDNN build.

Two float32 computations of one function differ by rounding that depends on the order of their sums
(thread count, SIMD width, which oneDNN or BLAS kernel runs), and that rounding grows with the size of
the partial sums, i.e. with the largest values of the result, not with each element: a logit of 0.01
next to logits of 50 carries the error of the 50s. So the bounds here are in "ulps of scale",
``|actual - expected| / (eps32 * max|expected|)`` with eps32 = 2**-23: reordering a float32 reduction
costs a few to a few tens of them, while real bugs (a wrong normalisation eps, a transposed weight, a
missing mask) cost hundreds or more, as each test states. A reference stored by another program (the
release's fixtures) is compared with a float64 run of our model, which is the same on every machine.
"""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps


def ulps_of_scale(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max, mean) of ``|actual - expected|`` in units of ``eps32 * max|expected|``."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.detach().double() - expected.detach().double()).abs()
    unit = EPS32 * expected.detach().double().abs().max().item()
    if unit == 0:  # all-zero expected values (an unused parameter's gradient): only exact zeros pass
        return (0.0, 0.0) if err.max().item() == 0 else (float("inf"), float("inf"))
    return err.max().item() / unit, err.mean().item() / unit


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, max_ulps: float,
                          mean_ulps: float | None = None, what: str = "") -> None:
    """Fail unless ``actual`` is within ``max_ulps`` (and on average ``mean_ulps``) ulps of scale."""
    worst, mean = ulps_of_scale(actual, expected)
    msg = f"{what}: error {worst:.1f} (max) / {mean:.2f} (mean) ulps of scale"
    assert worst <= max_ulps, f"{msg}, above {max_ulps}"
    assert mean_ulps is None or mean <= mean_ulps, f"{msg}, mean above {mean_ulps}"
