"""Evaluation harnesses (lmms-eval, VLMEvalKit) on ImageNet-Think, scored by ``eval score``'s own code.

- :mod:`eval.harness.outputs`: a harness's raw outputs, split by the project's parser, as the
  predictions ``eval score`` scores (:class:`~eval.harness.outputs.HarnessPredictions`);
- :mod:`eval.harness.files`: reading them from lmms-eval's ``--log_samples`` file or a
  VLMEvalKit prediction file;
- :mod:`eval.harness.lmms`: the functions of the lmms-eval task ``imagenet_think`` (the task
  folder ``lmms_task/``: its YAML and ``utils.py``), and ``imagenet-think eval lmms-task``.

None of them imports lmms-eval: the toolkit works without it.
"""
