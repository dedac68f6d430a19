"""The pruning policy: when to prune, how wide each group becomes, which
channels survive.

All knobs of the method live here, with their defaults:

- Train the dense model for `warmup_epochs` (1) epoch(s).
- At each pruning step, measure each prunable group's activation density AD
  on a fixed calibration set (`calibration_samples`, 512). The width rule
  (`width_rule`) turns it into a new width: the paper's `"density"`
  (default), `max(min_channels, ceil(AD * width))` (`min_channels` 4,
  never more than the current width), scaled by `removal_scale` (0.66,
  below), or `"relative"` / `"live"` (below). Widths are rounded
  up to a multiple of `round_to` (1; 8 suits mobile kernels), again capped
  at the current width. A grouped convolution's group (`ChannelGroup.blocks`
  equal blocks) gets the nearest width with the same count in every block,
  never below `min_channels`, and keeps the best-ranked channels of each.
- Channels kept (`selection`): `"l1"` (default) keeps the channels whose
  producer weights have the largest L1 norms; `"density"` keeps the
  channels with the highest per-channel density, ties broken by the L1
  norm; `"bn_gamma"` the largest |gamma| of the group's first
  BatchNormalization (L1 when it has none). Density says how many channels
  a layer needs; which ones is a separate question, and behind
  BatchNormalization a channel's own density ranks them worse than chance
  (measured below).
- When (`trigger`): `"interval"` (default) prunes every `interval` (1)
  epochs after warm-up; `"converged"` prunes once every group's AD changed
  by less than `tolerance` (0.02) between each of the last `patience` (2)
  epochs.
- Stop pruning when a step would remove less than `min_reduction` (5%) of
  every group, or after `max_prune_steps` (2; None: no limit). The
  remaining epochs train the final architecture.
- `reinitialize` (False): after each rebuild, re-initialise the compressed
  architecture and train it from scratch instead of keeping the retained
  weights.
- `threshold` (0.0): an activation counts as non-zero when it is strictly
  greater.
- `width_rule`: `"density"` is the paper's rule above; `"live"`
  keeps the channels that are live -- whose own density exceeds
  `live_threshold` (0.01) and, behind a BatchNormalization, whose |gamma|
  exceeds `gamma_threshold` (0.05) x the group's largest -- so each layer
  keeps its own count of channels that carry signal.
- `width_rule="relative"`: each group's AD relative to the densest group
  measured at that step, `ceil(AD / max AD x width)`: the densest group
  keeps its width and every other shrinks by how much less it fires. Under
  BatchNormalization->ReLU the absolute AD says little (about 0.5
  everywhere) but the groups still differ from each other (0.40-0.57 on
  vgg_small), and this rule follows those differences, a few percent to a
  few tens of percent per step, so widths come out different per layer.
  It never shrinks the densest group, so a model with a single measured
  group is never pruned by it: use `"density"` there.
- `removal_scale` (0.66): multiplies the fraction of a group's channels
  the width rule removes (a rule width `w'` of `w` becomes
  `ceil(w - scale x (w - w'))`, never below `min_channels`): with the
  paper's rule, a group at AD 0.5 keeps 67% of its channels per step, one
  at 0.4 keeps 60%; 2.0 would take twice the rule's cut, in the same
  proportions between layers. The accuracy guard still judges every step.
- `recovery_updates` (1600): a step takes its full cut only when at least
  this many optimizer updates are left after it (to the end of `fit`);
  with fewer, it takes that share of the cut (`recovery`: 800 updates left
  take half of it). A cut costs accuracy that training must win back, and
  the accuracy guard cannot see how much of it comes back in the last
  epochs: this is how the default holds its budget on short runs (measured
  below). With the updates too few for a step to remove `min_reduction`,
  pruning stops. None: always the full cut.
- `max_removal` (None): the largest fraction of a group's channels one
  step may remove, whatever the width rule says.
- `recalibrate_batch_norm` (True): after each rebuild, the moving means
  and variances of every BatchNormalization are re-estimated on the
  calibration set (`keras_adp.rebuild.recalibrate_batch_norm`). Removing
  channels changes what the layers after them see, and with the default
  momentum 0.99 the old statistics linger for hundreds of steps: validation
  in inference mode (what the accuracy guard judges) would otherwise
  measure stale statistics, not the pruned network.
- `gamma_l1` (0.0): an L1 penalty on every BatchNormalization gamma
  (network slimming's pressure), added by the trainer while pruning can
  still happen and released when pruning stops; it drives the gammas of
  unneeded channels to zero, which `"live"` then sees.

The accuracy guard (on by default, `max_accuracy_drop=0.01`). A pruning
step is a trial. The trainer keeps the model as it was just before the step
(architecture, weights, optimizer state: in memory, and in `run_dir` when
there is one), trains the pruned model for `recovery_epochs` (1) epochs and
then compares the monitored metric (`monitor`, `"auto"`: the first
validation accuracy Keras logs, such as `val_accuracy`, else `val_loss`)
with its *reference*: the best value the run has reached so far with an
accepted model (the dense epochs and every accepted step; never a
rolled-back one). A step that leaves the metric more than
`max_accuracy_drop` (in the metric's own units: 0.01 is one point of
accuracy; for a loss, how much higher it may be) worse than the reference is
rolled back: the pre-step weights and optimizer slots come back exactly
(the optimizer's iteration count goes on, so a learning-rate schedule keeps
its place), and the step is retried with half the removal of each group,
up to `max_retries` (1) times; after that, pruning stops. A step is only
taken when `recovery_epochs` epochs remain to judge it and at least one
more to train the model kept after the judgement. The metric is
measured on `validation_data`; without it, the trainer holds out
`validation_split` (10%) of the training arrays (a fixed random subset,
never trained on) and validates on it. `max_accuracy_drop=None` turns the
guard off (and nothing is held out).

The best value so far trails what the dense model would reach by the same
epoch: while the network is still learning, a step that costs more than the
budget can pass because the recovery epoch's own progress hides the loss,
and the steps add up (on 60,000 Fashion-MNIST images, `removal_scale=2`
passed every step and ended 2.0 points below dense). When the monitored
metric of a dense run with the same data and schedule is known, give it
as `dense_reference` (one value per epoch, 0-based; its last value stands
for later epochs): the guard then judges each step against the stricter
of it at the judged epoch and the best value so far, which bounds how far
below that dense run each judged epoch may fall.

Why the defaults: the paper's rule, two steps early, two thirds of its cut,
shrunk when little training follows. Measured with
`benchmarks/bench_tradeoff.py` (vgg_small x1.0, BN->ReLU, 20,000
Fashion-MNIST images of which 2,000 are held out for the guard, 6 epochs,
batch 128 (141 updates per epoch), Adam 2e-3 cosine, 3 seeds; tested on
the 10,000 test images; `benchmarks/results/tradeoff_20k*`), against the
same architecture at a uniform width multiplier trained from scratch for
the same epochs:

- the full cut (`"density"`, `removal_scale=0.66`, `max_prune_steps=2`,
  steps after epochs 1 and 2 of 6; `recovery_updates=None`) ended at
  90.01% (89.85, 90.20, 89.99) with 55.9k parameters (5.2x fewer), and the
  uniformly narrower network of the same size (x0.44, 56.2k) at 89.49%
  (89.29, 89.42, 89.75): +0.53 points, every seed above (+0.56, +0.78,
  +0.24); training compute 0.39x dense. Widths such as 17/32, 17/32,
  29/64, 26/64, 53/128, 59/128: the early layers, which fire more, keep
  more. But dense reached 91.22% (91.28, 91.33, 91.05): 1.21 points
  below, more than the 1-point budget, while each step passed its trial;
- what made the difference against uniform width is *when*: each step
  costs accuracy that the network must win back, and the pruned network
  needs epochs at its final size. Two steps right after the first epoch
  leave it four; the earlier defaults pruned every epoch until the last
  two, and either stayed mild (`"relative"`, 2.1x fewer parameters, +0.3
  points over uniform width at that size) or fell behind uniform width
  when cutting harder (squared relative ratio: 7x, -0.6 points; the
  paper's full halvings: -1.1 points, their trials mostly rolled back,
  each costing an epoch; capped at 25% per step over four steps: -0.7
  points, 1 seed). The same 5.2x in one step after epoch 1, which leaves
  five epochs at the final size, did no better: 89.55 and 90.02% in two
  seeds, the third rolled back to 3.3x (`tradeoff_20k_1step.log`);
- the full cut of the paper's rule (a group at AD 0.5 halved per step)
  fails the guard more often than not in the first epochs; two thirds of
  it (`removal_scale=0.66`: 33% of a group at AD 0.5) passed every trial
  in every seed;
- how much of the cut to take depends on how much training is left to
  win it back, which no trial sees: a trial epoch compares networks still
  far from converged, and the gap opens as the learning rate decays (the
  twin trial below judged a seed's two steps 0.15 and 0.30 points short of
  the model without them, and that seed ended 1.06 points below dense).
  With `recovery_updates=1600` the two steps here, with 705 and 564 updates
  left, take 44% and 35% of the cut: 90.96% (91.03, 91.00, 90.84) with
  166.0k parameters (1.7x fewer), 0.26 points below dense (-0.25, -0.33,
  -0.21 per seed), within the budget, and +0.27 points over uniform width
  at the same size (+0.34, +0.31, +0.16; x0.75, 163.2k, 90.67%); training
  compute 0.69x dense. On ResNet-18 x0.25 with the same data (batch 128):
  89.86% at 1.7x fewer parameters against 89.84% dense (one dense seed),
  +0.66 over uniform width at that size; the full cut had ended 0.52
  below at 4.0x (`tradeoff_20k_r18_defaults_table.txt`).

On all 60,000 training images (the same setup otherwise, 6,000 held out,
422 updates per epoch, 3 seeds; `benchmarks/results/tradeoff_60k_tf/`),
the two steps have 2,110 and 1,688 updates left, so `recovery_updates`
leaves their cut whole: the defaults ended at 92.34% with 55.6k
parameters (5.2x fewer), 0.90 points below dense (93.25%), and uniform
width x0.44 at 91.99%: +0.37 points at the same size, training compute
0.39x dense, wall time 0.56x and 0.65x dense in the two seeds timed back
to back. Why 1,600: the most a step may ask for while the 60k run's
second step (1,688 updates left) keeps its full cut; less (say 1,200)
would cut more on 20k images and was not measured. Where a dense run is
trained anyway (`keras-adp train`), the final budget check compares the
two.

Why `selection="l1"`: the width rule says how many channels a group keeps,
not which. `benchmarks/bench_selection.py` (vgg_small after 2 dense
epochs, 86.3% test accuracy; every group cut alike, BN re-estimated;
`benchmarks/results/selection_damage_s1.log`) measured test accuracy right
after one cut and after a quarter epoch of training: at a 25% cut,
keeping the densest channels gave 57.1% / 76.1%, random channels
69.2% / 84.8%, the largest L1 norms 79.7% / 85.3%; at 50%, 25.4% / 54.1%
(densest), 16.3% / 44.8% (random), 27.1% / 80.6% (L1). Behind
BatchNormalization, where every channel fires about half the time, a
channel's own density is a poor measure of its worth; its weights'
magnitude is a better one. On the trade-off benchmark above (3 seeds),
`"l1"` ended 90.64% against 90.12% with `"density"` at the same size
(140.8k vs 139.6k parameters), +0.31 points above uniform width at the
same parameters where `"density"` was -0.21, and one of twelve steps was
rolled back instead of two.

`"live"` with `gamma_l1` produced nothing to prune: with `benchmarks/
bn_density_signal.py` (20,000 images, 3 epochs; `benchmarks/results/
bn_density_signal_20k_3ep.log`), at `gamma_l1` 0, 3e-4, 1e-3 and 3e-3 every
layer's AD stayed between 0.40 and 0.54 and not one channel was dead
(density <= 0.01) or flat (|gamma| <= 0.05 x the layer's largest); at 3e-3
the penalty shrank every gamma together and test accuracy fell from 85.5%
to 65.7%. `"live"` is the rule for networks whose channels do die (ReLU
without BatchNormalization, longer training, or a stronger pressure of
your own).

The trade-off of the defaults: `max_prune_steps=2` bounds the compression
(about 5x fewer parameters on BN->ReLU networks, where AD stays near 0.5);
more steps compress further and cost more accuracy (`max_prune_steps=3`
with `max_accuracy_drop=0.02`: see README). `recovery_updates` measures
the training left, not whether the network needs its width: a short run
compresses less even where the full cut would have cost nothing (the
bundled 5,400 images of `keras-adp train`, 85 updates per epoch: 1.35x
fewer parameters and 81.10% test accuracy, where the full cut had given
4.15x and 80.70%; dense 77.30%). Set it to None, or lower it, for more
compression on short runs, and check the result against a dense run. And
the guard's reference is the best validation value seen so far, not what
the dense model would reach by the end. Holding the steps to the mean
dense validation curve instead (`dense_reference`) did not help on 20k
images: in the first epochs that curve rises faster than a just-pruned
network recovers, so seed 0 had both trials rolled back and kept the
dense architecture, seed 1 kept one halved step (1.4x), seed 2 both steps
(5.2x), and they ended at 90.04, 89.82 and 89.99%: each rolled-back trial
costs an epoch that the kept model does not train.

`trial="twin"`: the model kept from before the step trains the trial
epoch too, on the same batches with the same seed, beside the pruned one
(no density, no user callbacks). It is the reference: the step is judged
against what the network reaches without it at the same epoch (the
stricter of that and `dense_reference`), so the recovery epoch's own
progress no longer hides the step's cost; and the budget is the run's, not
each step's: each accepted step's shortfall below its twin is spent from
`max_accuracy_drop` (`RunState.deficit`), and later steps are judged
against what is left. A rolled-back step goes on from the twin, which
trained the trial epoch: nothing is lost (a run whose every step is rolled
back ends exactly where a run that never pruned ends), at the price of
training the larger model once more per trial (counted in the run's
compute). Needs `recovery_epochs=1`. Not the default: on the 20,000-image
benchmark above (3 seeds, the full cut) it kept less (3.0x fewer
parameters on average) and still ended 1.07 points below dense (90.15%),
at 0.85x dense's training compute instead of 0.39x: each step's cost at its trial epoch
was within budget, and the rest of the gap comes from training the
smaller network for the remaining epochs, which no trial epoch sees.

A property of the method worth knowing: where BatchNormalization directly
precedes the ReLU, each channel's pre-activation is normalised to roughly
zero mean, so activation density tends to stay near 0.5 however long the
network trains. Under the paper's rule (`width_rule="density"`) each
pruning step then takes about the same fraction of every group (half, or
a third with the default `removal_scale`), and neither the `"converged"`
trigger nor `min_reduction` stops it before `min_channels`: the default
`max_prune_steps=2` bounds it (each step costs about 2.2x in parameters
at the default scale, 4x at the full rule).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from keras_adp import channel_blocks

__all__ = ["ADPPolicy", "SELECTIONS", "TRIALS", "TRIGGERS", "WIDTH_RULES"]

SELECTIONS = ("density", "l1", "bn_gamma")
WIDTH_RULES = ("density", "live", "relative")
TRIALS = ("rollback", "twin")
TRIGGERS = ("interval", "converged")


@dataclasses.dataclass(frozen=True)
class ADPPolicy:
    """Parameters of activation-density driven pruning (see module docs).

    Args:
        warmup_epochs: dense epochs before the first pruning step. Defaults
            to `1`.
        min_channels: no group shrinks below this many channels (nor is it
            widened to reach it). Defaults to `4`.
        round_to: new widths are rounded up to a multiple of this. Defaults
            to `1`.
        selection: `"l1"`, `"density"` or `"bn_gamma"`. Defaults to
            `"l1"`.
        trigger: `"interval"` or `"converged"`. Defaults to `"interval"`.
        interval: epochs between pruning steps. Defaults to `1`.
        tolerance: largest change of AD that counts as converged. Defaults
            to `0.02`.
        patience: epochs over which AD must be stable. Defaults to `2`.
        min_reduction: smallest fraction of a group worth a pruning step.
            Defaults to `0.05`.
        max_prune_steps: most pruning steps, or None. Defaults to `2`.
        reinitialize: re-initialise each rebuilt model. Defaults to `False`.
        threshold: density threshold. Defaults to `0.0`.
        calibration_samples: samples in the density calibration set.
            Defaults to `512`.
        max_accuracy_drop: how much worse than its reference the monitored
            metric may be after a step's recovery epochs, in the metric's
            units, or None to turn the guard off. Defaults to `0.01`.
        monitor: the log key judged by the guard, or `"auto"` (a
            validation accuracy if logged, else `"val_loss"`). Defaults to
            `"auto"`.
        recovery_epochs: epochs of training after a step before it is
            judged. Defaults to `1`.
        max_retries: gentler retries (half the removal) after a rollback
            before pruning stops. Defaults to `1`.
        validation_split: fraction of the training arrays held out for the
            guard when `fit` gets no `validation_data`. Defaults to `0.1`.
        width_rule: `"density"` (the paper's), `"relative"` or `"live"`.
            Defaults to `"density"`.
        live_threshold: per-channel density at or below which a channel
            is dead (`"live"`). Defaults to `0.01`.
        gamma_threshold: |gamma| at or below this fraction of the group's
            largest marks a channel flat (`"live"`). Defaults to `0.05`.
        gamma_l1: L1 penalty on BatchNormalization gammas while pruning may
            go on. Defaults to `0.0`.
        recalibrate_batch_norm: after each rebuild, re-estimate the
            BatchNormalization moving statistics on the calibration set.
            Defaults to `True`.
        max_removal: the most of a group's channels (a fraction in
            (0, 1]) one step removes, or None for no cap. Defaults to
            `None`.
        removal_scale: multiplies the fraction of each group the width
            rule removes (> 0). Defaults to `0.66`.
        dense_reference: the monitored metric a dense run reached at the
            end of each epoch (a sequence of finite numbers, 0-based; the
            last stands for later epochs), or None to judge against the
            best value so far only. Defaults to `None`.
        trial: `"rollback"` or `"twin"` (the model from before the step
            trains the trial epoch beside the pruned one and is the
            reference; needs `recovery_epochs=1`). Defaults to
            `"rollback"`.
        recovery_updates: optimizer updates a step needs left after it
            (to the end of `fit`) to take its full cut; with fewer left it
            removes that fraction of it (`recovery`). None: always the
            full cut. Defaults to `1600`.
    """

    warmup_epochs: int = 1
    min_channels: int = 4
    round_to: int = 1
    selection: str = "l1"
    trigger: str = "interval"
    interval: int = 1
    tolerance: float = 0.02
    patience: int = 2
    min_reduction: float = 0.05
    max_prune_steps: int | None = 2
    reinitialize: bool = False
    threshold: float = 0.0
    calibration_samples: int = 512
    max_accuracy_drop: float | None = 0.01
    monitor: str = "auto"
    recovery_epochs: int = 1
    max_retries: int = 1
    validation_split: float = 0.1
    width_rule: str = "density"
    live_threshold: float = 0.01
    gamma_threshold: float = 0.05
    gamma_l1: float = 0.0
    recalibrate_batch_norm: bool = True
    max_removal: float | None = None
    removal_scale: float = 0.66
    dense_reference: tuple[float, ...] | None = None
    trial: str = "rollback"
    recovery_updates: int | None = 1600

    def __post_init__(self):
        if self.dense_reference is not None and not isinstance(
            self.dense_reference, (str, bytes)
        ):
            try:
                values = tuple(self.dense_reference)
            except TypeError:
                values = self.dense_reference
            # Frozen: a list from JSON (`from_config`) is kept as a tuple.
            object.__setattr__(self, "dense_reference", values)
        _validate_policy(self)

    def get_config(self) -> dict:
        """The fields as plain Python values (JSON-serialisable)."""
        return {
            name: _plain(value)
            for name, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_config(cls, config: dict) -> "ADPPolicy":
        """The policy of a `get_config()` dict; unknown keys are an error."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown ADPPolicy fields {unknown}. Expected fields among "
                f"{sorted(known)}. Received: {dict(config)!r}"
            )
        return cls(**config)

    # ----------------------------------------------------------- decisions
    def new_width(self, width: int, density: float) -> int:
        """Width of a group of `width` channels at activation density AD."""
        if not 0.0 <= density <= 1.0 or math.isnan(density):
            raise ValueError(
                f"Expected a density in [0, 1]. Received: density={density}"
            )
        target = max(self.min_channels, math.ceil(density * width - 1e-9))
        target = -(-target // self.round_to) * self.round_to
        return int(min(width, max(1, target)))

    def should_prune(
        self,
        epoch: int,
        density_history: list[dict[str, float]],
        steps_done: int,
        last_prune_epoch: int | None,
    ) -> bool:
        """Whether to prune at the end of (0-based) `epoch`.

        Args:
            epoch: the epoch that just ended.
            density_history: per epoch so far (this one last), group -> AD.
            steps_done: pruning steps already taken.
            last_prune_epoch: epoch of the last pruning step, or None.
        """
        if epoch + 1 < self.warmup_epochs:
            return False
        if (
            self.max_prune_steps is not None
            and steps_done >= self.max_prune_steps
        ):
            return False
        if self.trigger == "interval":
            since = epoch - (
                last_prune_epoch
                if last_prune_epoch is not None
                else self.warmup_epochs - 1 - self.interval
            )
            return since >= self.interval
        # "converged": AD stable over the last `patience` epochs since the
        # last rebuild (densities before a rebuild describe another model).
        start = 0 if last_prune_epoch is None else last_prune_epoch + 1
        recent = density_history[start:]
        if len(recent) < self.patience + 1:
            return False
        window = recent[-(self.patience + 1):]
        for before, after in zip(window, window[1:]):
            for name, value in after.items():
                if name not in before:
                    continue
                if abs(value - before[name]) >= self.tolerance:
                    return False
        return True

    def live(self, channel_density, gamma=None) -> np.ndarray:
        """Which channels are live: boolean mask of shape `(channels,)`.

        A channel is live when its own density exceeds `live_threshold`
        and, if the group has a BatchNormalization, its |gamma| exceeds
        `gamma_threshold` x the group's largest |gamma| (a channel with
        gamma near 0 outputs about the constant ReLU(beta): it may fire
        always, yet carries nothing).
        """
        mask = np.asarray(channel_density, dtype=np.float64) > self.live_threshold
        if gamma is not None:
            magnitude = np.abs(np.asarray(gamma, dtype=np.float64))
            largest = magnitude.max() if magnitude.size else 0.0
            mask &= magnitude > self.gamma_threshold * largest
        return mask

    def recovery(self, updates_left: int | None) -> float:
        """The fraction of its cut a step takes with `updates_left`
        optimizer updates after it: `min(1, updates_left /
        recovery_updates)`; 1.0 when either is None."""
        if self.recovery_updates is None or updates_left is None:
            return 1.0
        return min(1.0, max(0, updates_left) / self.recovery_updates)

    def group_width(
        self, width: int, density, gamma=None, densest: float | None = None,
        recovery: float = 1.0,
    ) -> int:
        """The new width of a group of `width` channels (see `width_rule`),
        at most `max_removal` of them removed.

        Args:
            width: the group's current width.
            density: its `Density`.
            gamma: per-channel gamma of its first BatchNormalization, or None.
            densest: for `width_rule="relative"`, the largest AD among the
                groups measured at this step (defaults to this group's own).
            recovery: multiplies `removal_scale` (`ADPPolicy.recovery`).
        """
        if self.width_rule == "density":
            new = self.new_width(width, density.overall)
        elif self.width_rule == "relative":
            top = density.overall if densest is None else densest
            ratio = 1.0 if top <= 0 else min(1.0, density.overall / top)
            new = self.new_width(width, ratio)
        else:
            count = int(self.live(density.channels, gamma).sum())
            new = self.new_width(width, count / width)
        scale = self.removal_scale * recovery
        if scale != 1.0 and new < width:
            kept = 1.0 - scale * (width - new) / width
            new = self.new_width(width, min(1.0, max(0.0, kept)))
        if self.max_removal is not None:
            floor = math.ceil((1.0 - self.max_removal) * width - 1e-9)
            new = min(width, max(new, floor))
        return new

    def plan(
        self, groups, densities, scores, gammas=None, recovery: float = 1.0
    ) -> dict[str, np.ndarray]:
        """Channels to keep in each group, or {} when pruning is not worth it.

        Args:
            groups: the model's `ChannelGroup`s.
            densities: group name -> `Density` (groups without one are kept).
            scores: group name -> per-channel L1 (or |gamma|) scores.
            gammas: group name -> per-channel gamma (for `width_rule="live"`),
                or None.
            recovery: the fraction of the cut this step may take
                (`recovery`); 1.0 for the full cut.

        Returns:
            group name -> sorted kept indices, for groups that shrink. Empty
            when no group would lose at least `min_reduction` of its
            channels (the stopping rule).
        """
        keep = {}
        worthwhile = False
        measured = [
            densities[group.name].overall
            for group in groups
            if group.prunable and densities.get(group.name) is not None
        ]
        densest = max(measured) if measured else None
        for group in groups:
            density = densities.get(group.name)
            if not group.prunable or density is None:
                continue
            gamma = (gammas or {}).get(group.name)
            width = self.group_width(
                group.size, density, gamma, densest, recovery
            )
            # A grouped convolution's channels: equal counts per block.
            blocks = getattr(group, "blocks", 1)
            if blocks > 1:
                width = blocks * channel_blocks.block_count(
                    width, group.size, blocks, self.min_channels
                )
            if width >= group.size:
                continue
            if (group.size - width) / group.size >= self.min_reduction:
                worthwhile = True
            keep[group.name] = self.select(
                width, density.channels, scores.get(group.name), gamma,
                blocks=blocks,
            )
        return keep if worthwhile else {}

    def select(
        self, width: int, channel_density, channel_score, gamma=None,
        blocks: int = 1,
    ) -> np.ndarray:
        """Indices of the `width` channels to keep, sorted; with `blocks >
        1`, `width / blocks` of each block (`ChannelGroup.blocks`), the
        best ranked within each."""
        order = self.rank(channel_density, channel_score, gamma)
        if blocks > 1:
            return channel_blocks.equal_blocks(
                order, width // blocks, len(order), blocks
            )
        return np.sort(order[:width])

    def rank(self, channel_density, channel_score, gamma=None) -> np.ndarray:
        """Channel indices, most worth keeping first (see `selection`).

        With `width_rule="live"`, live channels come before the others,
        each part in `selection` order.
        """
        size = len(channel_density)
        if channel_score is None:
            score = np.zeros(size)
        else:
            score = np.asarray(channel_score, dtype=np.float64)
        keys = [-score]
        if self.selection == "density":
            keys = [-score, -np.asarray(channel_density)]
        if self.width_rule == "live":
            keys.append(~self.live(channel_density, gamma))
        # lexsort: last key is primary; stable for ties.
        return np.lexsort(tuple(keys))


def _plain(value: Any) -> Any:
    """A policy field as a JSON value (NumPy scalars unwrapped, tuples as
    lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _validate_dense_reference(value: Any) -> None:
    if value is None:
        return
    if (
        not isinstance(value, tuple)
        or not value
        or not all(_is_real(v) and math.isfinite(v) for v in value)
    ):
        raise ValueError(
            "Expected `dense_reference` to be None or a non-empty sequence "
            "of finite numbers (the monitored metric of a dense run at the "
            "end of each epoch, e.g. its history.history['val_accuracy']). "
            f"Received: dense_reference={value!r}"
        )


def _validate_policy(policy: ADPPolicy) -> None:
    """Raise `ValueError` for the first field of `policy` out of range."""
    _validate_int("warmup_epochs", policy.warmup_epochs, 0)
    _validate_int("min_channels", policy.min_channels, 1)
    _validate_int("round_to", policy.round_to, 1)
    _validate_int("interval", policy.interval, 1)
    _validate_int("patience", policy.patience, 1)
    _validate_int("calibration_samples", policy.calibration_samples, 1)
    if policy.max_prune_steps is not None:
        _validate_int("max_prune_steps", policy.max_prune_steps, 0)
    _validate_choice("selection", policy.selection, SELECTIONS)
    _validate_choice("width_rule", policy.width_rule, WIDTH_RULES)
    _validate_choice("trigger", policy.trigger, TRIGGERS)
    _validate_choice("trial", policy.trial, TRIALS)
    for name in ("tolerance", "min_reduction", "live_threshold",
                 "gamma_threshold"):
        _validate_number(name, getattr(policy, name), upper=1.0)
    _validate_number("gamma_l1", policy.gamma_l1)
    if policy.max_removal is not None:
        _validate_max_removal(policy.max_removal)
    if not _is_real(policy.removal_scale) or not (
        0 < policy.removal_scale < math.inf
    ):
        raise ValueError(
            "Expected `removal_scale` to be a finite number > 0 (the "
            "multiplier of the width rule's cut; 1.0 keeps it as is). "
            f"Received: removal_scale={policy.removal_scale!r}"
        )
    if policy.max_accuracy_drop is not None:
        _validate_number("max_accuracy_drop", policy.max_accuracy_drop)
    _validate_dense_reference(policy.dense_reference)
    _validate_finite("threshold", policy.threshold)
    _validate_int("recovery_epochs", policy.recovery_epochs, 1)
    if policy.trial == "twin" and policy.recovery_epochs != 1:
        raise ValueError(
            "Expected `recovery_epochs=1` with `trial='twin'` (the pre-step "
            "model trains beside the pruned one for the single trial "
            f"epoch). Received: recovery_epochs={policy.recovery_epochs!r}. "
            "Fix: use `trial='rollback'` for longer trials."
        )
    _validate_int("max_retries", policy.max_retries, 0)
    if policy.recovery_updates is not None:
        _validate_int("recovery_updates", policy.recovery_updates, 1)
    _validate_monitor(policy.monitor)
    _validate_validation_split(policy.validation_split)
    for name in ("reinitialize", "recalibrate_batch_norm"):
        _validate_bool(name, getattr(policy, name))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate_max_removal(value: Any) -> None:
    if not _is_real(value) or not 0 < value <= 1:
        raise ValueError(
            "Expected `max_removal` to be None or a fraction in (0, 1] "
            "(the most of a group's channels one step removes). "
            f"Received: max_removal={value!r}"
        )


def _validate_finite(name: str, value: Any) -> None:
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(
            f"Expected `{name}` to be a finite number. "
            f"Received: {name}={value!r}"
        )


def _validate_monitor(value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(
            "Expected `monitor` to be 'auto' or a log key such as "
            f"'val_accuracy'. Received: monitor={value!r}"
        )


def _validate_validation_split(value: Any) -> None:
    if not _is_real(value) or not 0 < value < 1:
        raise ValueError(
            "Expected `validation_split` to be a number in (0, 1). "
            f"Received: validation_split={value!r}"
        )


def _validate_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"Expected `{name}` to be True or False. "
            f"Received: {name}={value!r}"
        )


def _validate_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {choices}. "
            f"Received: {name}={value!r}"
        )


def _validate_number(name: str, value: Any, upper: float = math.inf) -> None:
    """A real number in `[0, upper)` (finite)."""
    if not _is_real(value) or not 0 <= value < upper:
        shown = "[0, 1)" if upper == 1.0 else ">= 0 and finite"
        raise ValueError(
            f"Expected `{name}` to be a number {'in ' if upper == 1.0 else ''}"
            f"{shown}. Received: {name}={value!r}"
        )


def _validate_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"Expected `{name}` to be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Expected `{name}` to be >= {minimum}. Received: {name}={value}"
        )
