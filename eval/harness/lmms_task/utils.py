"""The imagenet_think task's functions, defined in the toolkit (eval/harness/lmms.py): lmms-eval
imports this file by its path, the toolkit must be installed (``pip install imagenet-think[lmms]``)."""

from eval.harness.lmms import (  # noqa: F401
    AGGREGATIONS,
    doc_to_target,
    doc_to_text,
    doc_to_visual,
    process_docs,
    process_results,
)

globals().update(AGGREGATIONS)  # one aggregation per metric of the YAML's metric_list, named after it
