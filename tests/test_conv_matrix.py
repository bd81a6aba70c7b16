"""Convolution as a matrix: C·x is F.conv2d, Cᵀ·y is F.conv_transpose2d (Dumoulin & Visin, section 4)."""
import pytest
import torch
import torch.nn.functional as F

from course_utils.conv_matrix import conv_matrix, transposed_output_padding

CASES = [  # (c_in, c_out, size, kernel, stride, padding, dilation)
    (1, 1, 4, 3, 1, 0, 1),   # Dumoulin & Visin's 4x4 input, 3x3 kernel: a 4x16 matrix
    (1, 1, 5, 3, 2, 1, 1),
    (2, 3, 6, 3, 1, 1, 1),
    (3, 2, 7, 3, 2, 1, 1),
    (2, 2, 8, 3, 1, 2, 2),   # dilated
    (1, 2, 6, 4, 2, 1, 1),   # even kernel
    (2, 1, 5, 1, 1, 0, 1),   # 1x1
]


@pytest.mark.parametrize("c_in,c_out,size,kernel,stride,padding,dilation", CASES)
def test_c_times_x_is_conv2d(c_in, c_out, size, kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=g, dtype=torch.float64)
    x = torch.randn(1, c_in, size, size, generator=g, dtype=torch.float64)
    C = conv_matrix(weight, size, stride, padding, dilation)
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    assert C.shape == (y.numel(), x.numel())
    torch.testing.assert_close(C @ x.flatten(), y.flatten())


@pytest.mark.parametrize("c_in,c_out,size,kernel,stride,padding,dilation", CASES)
def test_c_transposed_times_y_is_conv_transpose2d(c_in, c_out, size, kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=g, dtype=torch.float64)
    C = conv_matrix(weight, size, stride, padding, dilation)
    out = F.conv2d(torch.zeros(1, c_in, size, size, dtype=torch.float64), weight, stride=stride, padding=padding,
                   dilation=dilation).shape[-1]
    y = torch.randn(1, c_out, out, out, generator=g, dtype=torch.float64)
    extra = transposed_output_padding(size, out, kernel, stride, padding, dilation)
    back = F.conv_transpose2d(y, weight, stride=stride, padding=padding, output_padding=extra, dilation=dilation)
    assert back.shape == (1, c_in, size, size)
    torch.testing.assert_close(C.T @ y.flatten(), back.flatten())


def test_the_guides_example_has_the_guides_sparsity():
    """4x4 input, 3x3 kernel, no padding, stride 1: a 4x16 matrix with 9 weights per row (section 4.1)."""
    C = conv_matrix(torch.arange(1.0, 10.0).reshape(1, 1, 3, 3), 4)
    assert C.shape == (4, 16)
    assert (C != 0).sum(1).tolist() == [9, 9, 9, 9]
    assert C[0, :3].tolist() == [1.0, 2.0, 3.0] and C[0, 3].item() == 0.0 and C[0, 4:7].tolist() == [4.0, 5.0, 6.0]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="C_out, C_in, k, k"):
        conv_matrix(torch.zeros(3, 3), 4)
    with pytest.raises(ValueError, match="does not fit"):
        conv_matrix(torch.zeros(1, 1, 5, 5), 3)
    with pytest.raises(ValueError, match="no output_padding"):
        transposed_output_padding(10, 2, 3, stride=2)
