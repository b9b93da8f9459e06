"""The :class:`Annotator`: a thinking VLM in vLLM's offline engine, with prompt building and parsing.

One :class:`Annotator` per process (or per Ray actor / GPU): it builds ``vllm.LLM``
from a :class:`~generation.config.VLMConfig`, sends a chunk's
:class:`~generation.runs.ImageTask` images to ``LLM.chat`` at once (vLLM batches and
schedules them), and turns every output into a
:class:`~generation.records.GenerationRecord` with ``parse_reasoning``.
A request that fails alone (an unreadable image, a prompt over ``max_model_len``)
becomes a :class:`~generation.records.Reject`; the others go on. Each image is read
once and checked against the manifest's ``sha256`` first: a file replaced or damaged
since sampling is rejected (``image_changed``) rather than annotated, so a record's
``image_sha256`` is the picture its text was generated for. An engine that
cannot go on (dead, out of memory, or failing every request of a chunk) stops the
run instead, before the chunk is committed, so that a resume redoes it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from generation.config import VLMConfig
from generation.cpu_env import set_cpu_env_defaults
from generation.images import ImageRejected, normalize, read_file
from generation.models import resolve_model
from generation.reasoning import parse_reasoning
from generation.records import GenerationRecord, Reject, sampling_json, utc_now
from generation.runs import ChunkResult, ImageTask


def model_revision(config: VLMConfig, model_path: str) -> str:
    """The revision a record names: the config's pin, else the local snapshot's commit, else ``local``."""
    if config.revision:
        return config.revision
    snapshot = Path(model_path)
    if snapshot.parent.name == "snapshots":
        return snapshot.name
    return "local" if snapshot.exists() else "unpinned"


class Annotator:
    """A vLLM engine for one model config."""

    def __init__(self, config: VLMConfig):
        import torch

        if not torch.cuda.is_available():
            set_cpu_env_defaults()
        from vllm import LLM, SamplingParams

        self.config = config
        self.model_path = resolve_model(config.model)
        self.revision = model_revision(config, self.model_path)
        self.question = config.question
        self.llm = LLM(
            model=self.model_path,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            **config.engine,
        )
        sampling = dict(config.sampling)
        if config.structured_output_regex:
            from vllm.sampling_params import StructuredOutputsParams

            sampling["structured_outputs"] = StructuredOutputsParams(regex=config.structured_output_regex)
        self.sampling_params = SamplingParams(**sampling)
        self.sampling_record = sampling_json({**config.sampling, "regex": config.structured_output_regex})

    def _messages(self, image) -> list[dict]:
        messages = (
            [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        )
        content = [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": self.question}]
        return [*messages, {"role": "user", "content": content}]

    def _chat(self, conversations: list[list[dict]]):
        return self.llm.chat(
            conversations,
            self.sampling_params,
            use_tqdm=False,
            chat_template_kwargs=self.config.chat_template_kwargs or None,
        )

    def annotate(self, tasks: list[ImageTask]) -> ChunkResult:
        """Records for the tasks that produced an output, rejects for the others."""
        result = ChunkResult(records=[], rejects=[])
        ready: list[tuple[ImageTask, list[dict]]] = []
        for task in tasks:
            try:
                data = read_file(task.absolute_path)
            except ImageRejected as error:
                result.rejects.append(self._reject(task, "unreadable_image", error))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if task.sha256 and digest != task.sha256:
                detail = (
                    f"{task.absolute_path} has sha256 {digest}, not the manifest's {task.sha256}: the file "
                    "was replaced or damaged since sampling; restore it, or sample again"
                )
                result.rejects.append(self._reject(task, "image_changed", detail))
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:
                    ready.append((task, self._messages(normalize(image))))
            except Exception as error:  # any decoding failure of one image is that image's reject
                result.rejects.append(self._reject(task, "unreadable_image", error))
        self._run(ready, result)
        failed = [reject for reject in result.rejects if reject.reason == "engine_error"]
        if len(failed) > 1 and len(failed) == len(ready):
            raise RuntimeError(
                f"every request of the chunk failed in the engine, e.g. {failed[0].detail}; "
                "stopping (a resume redoes this chunk)"
            )
        return result

    def _run(self, ready: list[tuple[ImageTask, list[dict]]], result: ChunkResult) -> None:
        if not ready:
            return
        try:
            outputs = self._chat([messages for _, messages in ready])
        except _fatal_errors():
            raise
        except (ValueError, RuntimeError, _vllm_error()) as error:
            if len(ready) == 1:
                reason = "prompt_too_long" if _is_too_long(error) else "engine_error"
                result.rejects.append(self._reject(ready[0][0], reason, error))
                return
            middle = len(ready) // 2  # isolate the failing request(s); the rest of the chunk goes through
            self._run(ready[:middle], result)
            self._run(ready[middle:], result)
            return
        for (task, _), output in zip(ready, outputs, strict=True):
            result.records.append(self._record(task, output))

    def _record(self, task: ImageTask, output) -> GenerationRecord:
        completion = output.outputs[0]
        parsed = parse_reasoning(completion.text, self.config.parse_style)
        return GenerationRecord(
            image_id=task.image_id,
            wnid=task.wnid,
            image_path=task.image_path,
            image_sha256=task.sha256,
            manifest_sha256=task.manifest_sha256,
            annotator=self.config.annotator,
            model_id=self.config.model,
            model_revision=self.revision,
            parse_style=self.config.parse_style,
            question=self.question,
            output=completion.text,
            think=parsed.think,
            answer=parsed.answer,
            think_closed=parsed.closed,
            finish_reason=completion.finish_reason or "abort",
            num_prompt_tokens=len(output.prompt_token_ids or ()),
            num_output_tokens=len(completion.token_ids),
            sampling=self.sampling_record,
            created_at=utc_now(),
        )

    def _reject(self, task: ImageTask, reason: str, error: Exception | str) -> Reject:
        detail = (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:2000]
        return Reject(task.image_id, task.image_path, "generate", self.config.annotator, reason, detail)


def _vllm_error() -> type[Exception]:
    try:
        from vllm.exceptions import VLLMError
    except ImportError:  # older vLLM raise ValueError / RuntimeError only
        return RuntimeError
    return VLLMError


def _fatal_errors() -> tuple[type[Exception], ...]:
    """Errors after which the engine cannot serve any request."""
    import torch

    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        return (torch.OutOfMemoryError,)
    return torch.OutOfMemoryError, EngineDeadError


def _is_too_long(error: Exception) -> bool:
    message = str(error)
    return "maximum context length" in message or "longer than the maximum model length" in message
