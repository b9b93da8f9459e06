"""General utilities every stage may use: the ImageNet-21K-P classes (``classes``), model
references (``model_refs``) and the tiny test models they name (``tiny/``), files of the checkout
(``checkout``), vLLM's CPU defaults (``vllm_cpu``)."""
