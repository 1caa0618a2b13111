"""Training set-up of both stages, from the command line to ``Trainer.fit``.

- :mod:`tats.train.flags`: the trainer flags (the release's Lightning-1.5 names mapped onto
  Lightning 2), ``--config`` YAML recipes, ``--max_nonfinite_steps``;
- :mod:`tats.train.guards`: fail-fast checks of the data flags and the transformer's token budget;
- :mod:`tats.train.trainer`: the ``Trainer`` (atomic checkpoints, progress bar, TensorBoard);
- :mod:`tats.train.scalers`: one fp16 loss scaler per optimizer; :mod:`tats.train.video_log`:
  clips in TensorBoard; :mod:`tats.train.lr`: the release's learning-rate rules;
  :mod:`tats.train.resume`: continuing from the newest checkpoint;
- :mod:`tats.train.vqgan` / :mod:`tats.train.transformer`: each stage's flags and ``fit_vqgan`` /
  ``fit_transformer``, which the root scripts call.

The LightningModules themselves live with their models (:mod:`tats.vqgan.lightning`,
:mod:`tats.gpt.lightning`), and the non-finite loss guard they use in :mod:`tats.faults`.
"""
