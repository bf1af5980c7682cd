"""Truncated-BPTT plumbing: batchify, get_batch, num_windows and the train/valid split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charlm.data.batching import batchify, get_batch, num_windows, to_tensor
from charlm.errors import ConfigError


def test_to_tensor_makes_int64_from_any_integer_array():
    t = to_tensor(np.array([[1, 2], [3, 65000]], dtype=np.uint16))
    assert t.dtype == torch.int64 and t.tolist() == [1, 2, 3, 65000]
    assert to_tensor(torch.tensor([4, 5], dtype=torch.int32)).dtype == torch.int64


def test_batchify_cuts_contiguous_rows_and_drops_the_remainder():
    ids = torch.arange(27)
    src = batchify(ids, 4)
    assert src.shape == (4, 6)
    for b in range(4):
        assert src[b].tolist() == list(range(b * 6, (b + 1) * 6))
    assert 24 not in src and 26 not in src


def test_batchify_refuses_a_stream_too_short_for_the_batch():
    with pytest.raises(ConfigError, match="batch-size"):
        batchify(torch.arange(7), 4)
    assert batchify(torch.arange(8), 4).shape == (4, 2)


def test_get_batch_targets_are_inputs_shifted_by_one():
    src = batchify(torch.arange(40), 4)  # (4, 10)
    x, y = get_batch(src, 3, 4)
    assert x.shape == y.shape == (4, 4)
    assert torch.equal(x, src[:, 3:7])
    assert torch.equal(y, src[:, 4:8])
    assert torch.equal(y, x + 1)  # arange: the next token of each row is +1


def test_windows_cover_every_target_once_with_a_last_partial_window():
    src = batchify(torch.arange(4 * 11), 4)  # (4, 11): 10 targets per row
    bptt = 4
    assert num_windows(src, bptt) == 3  # 4 + 4 + 2
    xs, ys = [], []
    for w in range(num_windows(src, bptt)):
        x, y = get_batch(src, w * bptt, bptt)
        xs.append(x)
        ys.append(y)
    assert [x.size(1) for x in xs] == [4, 4, 2]
    assert torch.equal(torch.cat(xs, 1), src[:, :-1])
    assert torch.equal(torch.cat(ys, 1), src[:, 1:])


@pytest.mark.parametrize("length,bptt,expected", [(2, 1, 1), (5, 4, 1), (6, 4, 2), (101, 100, 1), (102, 100, 2)])
def test_num_windows(length, bptt, expected):
    src = torch.zeros(3, length, dtype=torch.long)
    assert num_windows(src, bptt) == expected
