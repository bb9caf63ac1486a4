import pytest
import torch

from meltr.contract import nonfinite_tasks, stack_task_losses

TASKS = ("align", "joint", "cmlm")


def test_per_sample_losses_stack_to_b_by_t_in_the_combiners_order():
    losses = {"cmlm": torch.full((4,), 3.0), "align": torch.full((4,), 1.0), "joint": torch.full((4,), 2.0)}
    stacked = stack_task_losses(losses, TASKS)
    assert stacked.shape == (4, 3)
    assert stacked[0].tolist() == [1.0, 2.0, 3.0]


def test_any_scalar_loss_gives_batch_level_losses_with_vectors_averaged():
    losses = {"align": torch.tensor(1.0), "joint": torch.tensor([1.0, 3.0]), "cmlm": torch.tensor(5.0)}
    assert stack_task_losses(losses, TASKS).tolist() == [1.0, 2.0, 5.0]


@pytest.mark.parametrize(
    ("losses", "message"),
    [
        ({"align": torch.tensor(1.0), "joint": torch.tensor(1.0)}, r"missing task\(s\) \['cmlm'\]"),
        (
            {
                "align": torch.tensor(1.0),
                "joint": torch.tensor(1.0),
                "cmlm": torch.tensor(1.0),
                "mfm": torch.tensor(1.0),
            },
            r"unexpected task\(s\) \['mfm'\]",
        ),
        (
            {"align": torch.tensor(1.0), "jiont": torch.tensor(1.0), "cmlm": torch.tensor(1.0)},
            r"missing task\(s\) \['joint'\]; unexpected task\(s\) \['jiont'\]",
        ),
    ],
)
def test_missing_extra_and_misspelt_tasks_are_named(losses, message):
    with pytest.raises(ValueError, match=message):
        stack_task_losses(losses, TASKS)


def test_a_loss_of_the_wrong_shape_names_its_task():
    losses = {"align": torch.zeros(4), "joint": torch.zeros(4, 2), "cmlm": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"task 'joint'.*shape \(4, 2\)"):
        stack_task_losses(losses, TASKS)


def test_per_sample_losses_must_agree_on_the_batch_size():
    losses = {"align": torch.zeros(4), "joint": torch.zeros(3), "cmlm": torch.zeros(4)}
    with pytest.raises(ValueError, match="disagree on the batch size"):
        stack_task_losses(losses, TASKS)


def test_non_tensors_and_integer_losses_are_rejected_by_name():
    with pytest.raises(ValueError, match=r"task 'joint'.*torch\.Tensor"):
        stack_task_losses({"align": torch.zeros(()), "joint": 1.0, "cmlm": torch.zeros(())}, TASKS)
    with pytest.raises(ValueError, match=r"task 'cmlm'.*floating-point"):
        stack_task_losses({"align": torch.zeros(()), "joint": torch.zeros(()), "cmlm": torch.tensor(1)}, TASKS)


def test_nonfinite_tasks_names_only_the_bad_ones():
    stacked = torch.tensor([[1.0, float("nan"), 0.0], [1.0, 2.0, float("inf")]])
    assert nonfinite_tasks(stacked, TASKS) == ["joint", "cmlm"]
    assert nonfinite_tasks(torch.tensor([1.0, 2.0, 3.0]), TASKS) == []
