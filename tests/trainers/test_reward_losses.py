"""The Bradley-Terry loss, accuracy and pair statistics against hand-computed values, and last-token
pooling with left and right padding (pure tensors, then the tiny model)."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.common.data import pad_batch
from trainers.common.tiny import build_tiny_model
from trainers.reward.losses import bt_loss, pair_accuracy, pair_stats
from trainers.reward.model import build_reward_model, last_token_index, pool_last, position_ids_from_mask

CHOSEN = torch.tensor([2.0, 0.0, 1.0])
REJECTED = torch.tensor([1.0, 1.0, 1.0])  # differences 1, -1, 0 (a tie)


def test_bt_loss_is_the_mean_negative_log_sigmoid_of_the_differences():
    # -log sigmoid(d) = log(1 + e^-d): (0.3132617 + 1.3132617 + 0.6931472) / 3
    assert float(bt_loss(CHOSEN, REJECTED)) == pytest.approx(0.7732235185, abs=1e-7)


def test_bt_loss_subtracts_the_margin_inside_the_sigmoid():
    # differences 0.5, -1.5, -0.5: (0.4740770 + 1.7014133 + 0.9740770) / 3
    assert float(bt_loss(CHOSEN, REJECTED, margin=0.5)) == pytest.approx(1.0498557488, abs=1e-7)
    per_pair = torch.tensor([0.5, 0.5, 0.5])
    assert float(bt_loss(CHOSEN, REJECTED, margin=per_pair)) == pytest.approx(1.0498557488, abs=1e-7)


def test_bt_loss_is_stable_for_large_gaps_and_has_the_sigmoid_gradient():
    big = bt_loss(torch.tensor([1000.0]), torch.tensor([-1000.0]))
    wrong = bt_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert float(big) == 0.0 and float(wrong) == pytest.approx(2000.0)
    rc = torch.tensor([0.3], requires_grad=True)
    bt_loss(rc, torch.tensor([0.0])).backward()
    assert float(rc.grad) == pytest.approx(-(1 - 1 / (1 + math.exp(-0.3))), abs=1e-7)  # -(1 - sigmoid(d))


def test_accuracy_counts_ties_as_wrong_and_stats_match_hand_values():
    assert float(pair_accuracy(CHOSEN, REJECTED)) == pytest.approx(1 / 3)
    stats = pair_stats(CHOSEN, REJECTED)
    assert stats["accuracy"] == pytest.approx(1 / 3)
    assert stats["margin_mean"] == pytest.approx(0.0)  # (1 - 1 + 0) / 3
    assert stats["chosen_reward_mean"] == pytest.approx(1.0)
    assert stats["chosen_reward_std"] == pytest.approx(math.sqrt(2 / 3))  # population std of 2, 0, 1
    assert stats["rejected_reward_mean"] == pytest.approx(1.0) and stats["rejected_reward_std"] == 0.0


def test_last_token_index_follows_the_mask_for_left_and_right_padding():
    mask = torch.tensor(
        [
            [1, 1, 0, 0],  # right padded: last real token at 1
            [0, 0, 1, 1],  # left padded: at 3
            [1, 1, 1, 1],  # no padding
            [0, 0, 0, 1],  # a single token, left padded
            [1, 0, 0, 0],  # a single token, right padded
        ]
    )
    assert last_token_index(mask).tolist() == [1, 3, 3, 3, 0]
    hidden = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4, 1) * 10
    assert pool_last(hidden, mask).squeeze(-1).tolist() == [10.0, 70.0, 110.0, 150.0, 160.0]
    assert position_ids_from_mask(mask[1:2]).tolist() == [[0, 0, 0, 1]]


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("small"), seed=0, hidden=64, layers=2, heads=4)


@pytest.mark.parametrize("head", ["seq_cls", "value_head"])
def test_a_sequence_gets_the_same_reward_however_it_is_padded(small_model_dir, head):
    torch.manual_seed(0)
    model, tok = build_reward_model(small_model_dir, head)
    model.eval()
    pad = tok.pad_token_id
    a = tok("<bos>user: 2+3?\nassistant: 5<eos>\n", add_special_tokens=False)["input_ids"]
    b = [*tok("<bos>user: hi\nassistant: ", add_special_tokens=False)["input_ids"], pad]  # ends in the pad id
    with torch.no_grad():
        alone = [float(model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))) for s in (a, b)]
        for side in ("left", "right"):
            ids, mask = pad_batch([a, b, [5] * (len(a) + 7)], pad, side=side)
            batched = model(ids, mask)
            assert batched[:2].tolist() == pytest.approx(alone, abs=1e-5), side
    assert alone[0] != pytest.approx(alone[1], abs=1e-3)  # the pooling does not read a constant
