"""TFLite's fixed-point arithmetic in `integer_kernel_reference` (tinyconv.export.int8_kernels)."""

from __future__ import annotations

import numpy as np
import torch

from tinyconv.export.int8_kernels import int8_mean, multiply_by_quantized_multiplier, quantize_multiplier


def _mbqm(x: list[int], real: float) -> list[int]:
    multiplier, shift = quantize_multiplier(torch.tensor(real, dtype=torch.float64))
    return multiply_by_quantized_multiplier(torch.tensor(x, dtype=torch.int64), multiplier, shift).tolist()


def test_quantize_multiplier_is_tflites() -> None:
    multiplier, shift = quantize_multiplier(torch.tensor([1.0, 0.75, 1 / 250, 0.0], dtype=torch.float64))
    assert multiplier.tolist() == [1 << 30, 1610612736, 1099511628, 0]
    assert shift.tolist() == [1, 0, -7, 0]


def test_rounding_of_ties() -> None:
    # SaturatingRoundingDoublingHighMul rounds ties up (towards +inf), RoundingDivideByPOT away
    # from zero: with shift 0 only the first rounding happens.
    assert _mbqm([5, -5, 7, -7, 6, -6], 0.5) == [3, -2, 4, -3, 3, -3]


def test_double_rounding_matches_exact_rounding_away_from_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << 20), 1 << 20, 2000)
    # Multipliers as small as a conv's (right shift >= 7): the first rounding moves the result
    # by at most 2^-8 LSB, so only values within 0.004 of a tie can round differently.
    for real in (0.0018, 0.0049, 0.0072):
        exact = x * real
        far = np.abs(exact - np.floor(exact) - 0.5) > 0.01
        got = np.asarray(_mbqm(x.tolist(), real))
        assert np.all(np.abs(got - exact) <= 0.5 + 0.01)
        assert np.array_equal(got[far], np.round(exact[far]))


def test_double_rounding_is_not_exact_rounding() -> None:
    # 0.25 = 2^30 * 2^(-1 - 31): the high-mul first rounds x / 2 to an integer, then the shift
    # rounds again, so 5 * 0.25 = 1.25 becomes 2.5 and then 3 -> 2, where exact rounding gives 1.
    # This is the upward bias the float QDQ graph does not have.
    assert _mbqm([5, -5, 3, -3], 0.25) == [2, -1, 1, -1]


def test_int8_mean_folds_one_over_n_into_the_multiplier() -> None:
    # 25 x 10 values, sum (q - zp) = 124: the exact mean 0.496 rounds to 0, TFLite's MEAN
    # (multiplier (2^30 << 7) // 250, shift -6, double rounding) gives 1.
    q = torch.full((1, 1, 25, 10), -128, dtype=torch.int8)
    q.view(-1)[:124] = -127
    assert int(int8_mean(q, -128, 1 << 30, 1, -128, -128, 127)) == -127
    q.view(-1)[124] = -127  # 0.5 exactly: ties away from zero
    assert int(int8_mean(q, -128, 1 << 30, 1, -128, -128, 127)) == -127
    q.view(-1)[:125] = -128  # 0.0
    assert int(int8_mean(q, -128, 1 << 30, 1, -128, -128, 127)) == -128


def test_unknown_quantized_op_is_refused_by_name() -> None:
    """A quantized op without an int8 kernel emulation fails loudly instead of being skipped."""
    import pytest
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers quantized_decomposed ops)

    from tinyconv.export.int8_kernels import integer_kernel_reference
    from tinyconv.models.fusion import QuantizationError

    qd = torch.ops.quantized_decomposed
    g = torch.fx.Graph()
    x = g.placeholder("x")
    q = g.call_function(qd.quantize_per_tensor.default, (x, 0.1, 0, -128, 127, torch.int8))
    dq = g.call_function(qd.dequantize_per_tensor.default, (q, 0.1, 0, -128, 127, torch.int8))
    y = g.call_function(torch.ops.aten.sigmoid.default, (dq,))
    q2 = g.call_function(qd.quantize_per_tensor.default, (y, 1 / 256, -128, -128, 127, torch.int8))
    g.output(g.call_function(qd.dequantize_per_tensor.default, (q2, 1 / 256, -128, -128, 127, torch.int8)))
    with pytest.raises(QuantizationError, match="no int8 kernel emulation for aten.sigmoid"):
        integer_kernel_reference(torch.fx.GraphModule(torch.nn.Module(), g))
