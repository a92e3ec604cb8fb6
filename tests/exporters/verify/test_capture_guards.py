"""Guards of the capture that validation relies on (issue #21 item 5; tests/mutants/verify.json):
a noise input the program ignores, and a draw sized ``B + c`` that no graph input can follow."""

from __future__ import annotations

import pytest
import torch

from illia_export.errors import ExportError
from illia_export.exporters.torch.capture import batch_dims, check_noise_used


class IgnoresNoise(torch.nn.Module):
    def forward(self, x, eps_a, eps_b):
        return x * 2 + eps_b.sum()


def test_a_program_ignoring_a_noise_input_is_refused():
    args = (torch.randn(2, 3), torch.randn(3), torch.randn(3))
    program = torch.export.export(IgnoresNoise(), args, strict=False)
    check_noise_used(program, ["eps_b"], 2)  # used: passes
    with pytest.raises(ExportError, match="ignores noise input 'eps_a'"):
        check_noise_used(program, ["eps_a", "eps_b"], 1)


def test_draws_sized_batch_plus_a_constant_are_refused():
    assert batch_dims((4, 3), (8, 3), 4, 8, "x") == ["batch", 3]
    assert batch_dims((8,), (16,), 4, 8, "x") == ["2*batch"]
    with pytest.raises(ExportError, match="not a multiple of one dynamic input dim"):
        batch_dims((5, 3), (9, 3), 4, 8, "module 'm'")
