"""Stage 4a, defense: what a training pipeline does against poisons, applied to every model's
training set before (filters) or during (DP-SGD) training.

* :mod:`~truthserum.defense.filters`: exact deduplication, conflicting labels, near duplicates
  on a nearest-neighbour index, and the loss filter's selection;
* :mod:`~truthserum.defense.private`: DP-SGD with per-example gradients for all models at once;
* :mod:`~truthserum.defense.accounting`: the noise for a target epsilon, and the epsilon spent
  (per example and per group of replicas), by Opacus's accountants;
* :mod:`~truthserum.defense.stage`: a training job in, the defended job out.

The accountant (and with it Opacus) is imported only where DP-SGD is used.
"""
