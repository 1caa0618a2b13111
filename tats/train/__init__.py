"""Training set-up of both stages, from the command line to ``Trainer.fit``.

:mod:`~tats.train.flags` (the release's Lightning-1.5 flags on Lightning 2, ``--config`` YAML recipes,
``--max_nonfinite_steps``), :mod:`~tats.train.guards` (fail-fast checks of the data flags and the
token budget), :mod:`~tats.train.trainer`, :mod:`~tats.train.scalers`, :mod:`~tats.train.video_log`,
:mod:`~tats.train.lr`, :mod:`~tats.train.resume`, and one module per stage (:mod:`~tats.train.vqgan`,
:mod:`~tats.train.transformer`) with the ``fit_vqgan`` / ``fit_transformer`` the root scripts call.
The LightningModules live with their models (:mod:`tats.vqgan.lightning`, :mod:`tats.gpt.lightning`),
the non-finite loss guard in :mod:`tats.faults`. The layout: docs/development.md.
"""
