"""One training step as one object: forward, the weighting's backward, the update, the bookkeeping.

The engine's epoch loop only feeds batches to a `TrainStep`. Keeping the
whole step in one callable, with its bookkeeping (the per-task loss sums, the
steps that had a label for each task, and the step at which each task first
went non-finite) in tensors that live on the device and are updated in place,
is what lets `hydranet.core.capture` record the step once as a CUDA graph and
replay it: a replay re-runs exactly the device work of a call, so everything
the step changes must be a tensor it writes into, never a Python value it
rebinds. The same code runs eagerly on a CPU, which is how the CPU tests cover
the GPU's step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from hydranet.core.interfaces import StepContext, Weighting, label_mask
from hydranet.core.plugin_calls import PluginCall, Provenance, provenance, shape_problem

#: images, targets -> ((K,) losses, the shared features or None)
ForwardLosses = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor | None]"]
#: (K,) losses, the shared features or None, and (K,) 1.0 where the (global) batch had a label for the task, else 0.0
StepLosses = tuple[Tensor, "Tensor | None", Tensor]


class TrainStep:
    """Runs a step on a batch and keeps the epoch's running loss sums on the device.

    `loss_sums` holds the sum of each task's loss over the steps of this epoch
    so far; `labelled_steps` how many of those steps had at least one label
    for each task (a step whose batch had none adds a loss of 0, the masked
    mean of no rows, which the epoch's mean must not count: a task labelled on
    few images would read many times too low); `weight_sums` the sum of the
    weights the weighting applied in them (so the epoch's logged weights are the mean of those used, not a
    snapshot from before or after it); `first_bad` the 1-based step at which
    each task's loss was first non-finite (-1: never); `first_bad_weights` the
    step at which the weighting's weights were first non-finite while every
    loss was finite (its own fault, not the data's); `first_bad_combined` the
    same for the combined loss its backward returned (a `combine` that breaks
    while its weights look fine); `step_number` the steps counted so far. All
    are read by the host only at log intervals.

    Whether the weighting's backward gave the model any gradient at all is
    checked once, in the run's first update: a `backward` that forgets to call
    `.backward()` would otherwise train nothing, silently. A gradient's
    presence is metadata (`.grad is None`), so the check waits for nothing.
    """

    def __init__(
        self,
        forward_losses: ForwardLosses,
        weighting: Weighting,
        optimizer: torch.optim.Optimizer,
        context: Callable[[Tensor | None], StepContext],
        *,
        num_tasks: int,
        device: torch.device,
        share_losses: Callable[[Tensor, Tensor], Tensor] | None = None,
        sum_gradients: Callable[[], None] = lambda: None,
    ):
        self.forward_losses, self.weighting, self.optimizer = forward_losses, weighting, optimizer
        self.context, self.share_losses, self.sum_gradients = context, share_losses, sum_gradients
        self.loss_sums = torch.zeros(num_tasks, device=device)
        self.labelled_steps = torch.zeros(num_tasks, dtype=torch.long, device=device)
        self.weight_sums = torch.zeros(num_tasks, device=device)
        self.first_bad = torch.full((num_tasks,), -1, dtype=torch.long, device=device)
        self.first_bad_weights = torch.full((), -1, dtype=torch.long, device=device)
        self.first_bad_combined = torch.full((), -1, dtype=torch.long, device=device)
        self.step_number = torch.zeros((), dtype=torch.long, device=device)
        # The calls into the weighting, named and worded once per run, not per step.
        who = provenance(weighting, "weighting")
        self._backward_calls = {undeclared: PluginCall("the backward of", who, _backward_fix(who, undeclared))
                                for undeclared in (False, True)}
        self._no_gradient = PluginCall("the backward of", who, "A weighting's backward must call .backward() on "
                                       "the combined loss (or torch.autograd.backward on the model's parameters), "
                                       "or set .grad of the model's parameters itself; or use another weighting")
        #: (epoch, step) of the run's first update while its gradients are still to be checked; None once checked
        self._check_gradients_at: tuple[int, int] | None = (0, 0)
        self._weights_call = PluginCall("the weights() of", who, "Return one weight per task, in task order, from "
                                        "the weighting's weights(); or use another weighting")

    def start_epoch(self, loss_sums: Sequence[float], first_bad: Sequence[int], steps_done: int,
                    weight_sums: Sequence[float] = (), epoch: int = 0, labelled_steps: Sequence[int] = (),
                    skipped: int = 0) -> None:
        """Set the running sums in place (a resumed epoch starts from what was saved); `epoch` is for messages.

        A last.pt saved before the labelled steps were kept has none: each of its `steps_done` steps but the
        `skipped` ones counts as labelled for every task, the mean every loss had then.
        """
        self.loss_sums.copy_(torch.tensor(list(loss_sums) or [0.0] * self.loss_sums.numel()))
        self.labelled_steps.copy_(torch.tensor(list(labelled_steps) or
                                               [steps_done - skipped] * self.labelled_steps.numel()))
        if not weight_sums and steps_done:  # saved before weight sums were kept: the weights now, for each step
            weight_sums = (self.weighting.weights().detach().float().cpu() * steps_done).tolist()
        self.weight_sums.copy_(torch.tensor(list(weight_sums) or [0.0] * self.weight_sums.numel()))
        self.first_bad.copy_(torch.tensor(list(first_bad) or [-1] * self.first_bad.numel()))
        self.first_bad_weights.fill_(-1)
        self.first_bad_combined.fill_(-1)
        self.step_number.fill_(steps_done)
        if self._check_gradients_at is not None:
            self._check_gradients_at = (epoch, steps_done + 1)

    @property
    def running(self) -> list[Tensor]:
        """The step's running tensors, which every step updates in place: what a recorder snapshots and restores."""
        return [self.loss_sums, self.labelled_steps, self.weight_sums, self.first_bad, self.first_bad_weights,
                self.first_bad_combined, self.step_number]

    def forward(self, images: Tensor, targets: Tensor) -> StepLosses:
        """The (K,) losses of the batch (the global batch's value in a distributed run), the features, and
        which tasks the batch had a label for.

        Whether a task had a label is shared as its loss is, in the same call: it is the masked mean of a 1 for
        every labelled row, 1 where the global batch had a label and 0 where it had none (the 0 a loss of no
        rows is), so every process counts the same steps, with the one all-reduce the losses take anyway.
        """
        losses, features = self.forward_losses(images, targets)
        labelled = label_mask(targets).any(dim=0).to(losses.dtype)
        if self.share_losses is None:  # one process: nothing to share, and no copies per step to make for it
            return losses, features, labelled
        k = losses.shape[0]
        shared = self.share_losses(torch.cat([losses, labelled]), torch.cat([targets, targets], dim=1))
        return shared[:k], features, shared[k:].detach()

    def update(self, losses: Tensor, features: Tensor | None, labelled: Tensor) -> None:
        """The weighting's backward, the gradient sum over processes, the optimizer step, the bookkeeping."""
        detached = losses.detach()
        context = self.context(features)
        # Reading features it did not ask for is the usual slip: the fix says so when there are none.
        undeclared = context.features is None and not self.weighting.needs_features
        total = self._backward_calls[undeclared](self.weighting.backward, losses, context)
        if self._check_gradients_at is not None:
            self._check_gradients(context)
        # The weights this step applied: read after the backward (which sets them, for gradient strategies)
        # and before the update (which moves learned ones, as for uncertainty weighting).
        weights = self._checked_weights().detach().to(self.weight_sums.device, torch.float32)
        self.weight_sums.add_(weights)
        self.sum_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_number.add_(1)
        finite = torch.isfinite(detached)
        newly_bad = ~finite & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(newly_bad, self.step_number, self.first_bad))
        weights_bad = ~torch.isfinite(weights).all() & finite.all() & (self.first_bad_weights < 0)
        self.first_bad_weights.copy_(torch.where(weights_bad, self.step_number, self.first_bad_weights))
        if isinstance(total, Tensor):  # the combined loss backward returns; a backward of a plugin may return None
            total_finite = torch.isfinite(total.detach()).all().to(self.first_bad_combined.device)
            total_bad = ~total_finite & finite.all() & (self.first_bad_combined < 0)
            self.first_bad_combined.copy_(torch.where(total_bad, self.step_number, self.first_bad_combined))
        self.loss_sums.add_(detached)
        self.labelled_steps.add_((labelled > 0.5).to(self.labelled_steps.device, torch.long))

    def _checked_weights(self) -> Tensor:
        """The weighting's `weights()`, one per task: a shape check is metadata, so it costs no sync."""
        weights = self._weights_call(self.weighting.weights)
        if getattr(weights, "shape", None) != self.weight_sums.shape:
            problem = shape_problem(weights, tuple(self.weight_sums.shape), f"{self.weight_sums.numel()} tasks")
            raise self._weights_call.fault(problem or "")
        return weights

    def _check_gradients(self, context: StepContext) -> None:
        """Refuse, once, a backward that left every trainable parameter of the model without a gradient."""
        assert self._check_gradients_at is not None
        epoch, step = self._check_gradients_at
        self._check_gradients_at = None
        parameters = [*context.shared_parameters, *context.head_parameters]
        if parameters and all(p.grad is None for p in parameters):
            where = f" at epoch {epoch}, step {step}" if epoch else ""
            raise self._no_gradient.fault(f"gave none of the model's {len(parameters)} trainable parameters a "
                                          f"gradient{where} (the run's first update), so nothing would train")

    def skip(self) -> None:
        """Drop the step whose losses were not finite (train.on_nonfinite: skip)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.step_number.add_(1)
        if self._check_gradients_at is not None:
            epoch, step = self._check_gradients_at
            self._check_gradients_at = (epoch, step + 1)

    def __call__(self, images: Tensor, targets: Tensor) -> None:
        self.update(*self.forward(images, targets))


def _backward_fix(who: Provenance, undeclared: bool) -> str:
    """What to fix when the weighting's backward raises; `undeclared`: it got no features and did not ask for them."""
    # The backward pass through the model runs inside the weighting's backward, so a head's or backbone's
    # autograd error lands here too: a run with weighting=sum tells the two apart.
    if who.component == "weighting 'sum'" and who.origin.endswith("(built-in)"):
        return ("The built-in sum only adds the losses up, so the fault is in the backward pass through the model: "
                "a head, a task's loss or the backbone")
    through_model = ("; if the same run with --set weighting=sum fails too, the fault is in the backward pass "
                     "through the model (a head or the backbone), not in the weighting")
    if undeclared:
        return ("Fix the weighting's backward; if it reads context.features (None here), set needs_features = "
                "True on its class. Or use another weighting" + through_model)
    return "Fix the weighting's backward, or use another weighting" + through_model
