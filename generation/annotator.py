"""The :class:`Annotator`: a thinking VLM in vLLM's offline engine, with prompt building and parsing.

One :class:`Annotator` per process (or per Ray actor / GPU): it builds ``vllm.LLM`` from a
:class:`~generation.config.VLMConfig`, sends a chunk's :class:`~generation.runs.ImageTask` images to
``LLM.chat`` at once, and turns every output into a :class:`~generation.records.GenerationRecord`
with ``parse_reasoning``. Each image is read once and checked against the manifest's ``sha256``
first (``image_changed``); a request that fails alone becomes a
:class:`~generation.records.Reject` and the others go on, while an engine that cannot go on stops
the run before the chunk is committed, so that a resume redoes it. Answer forcing (the batched
second pass on token ids, ``annotate`` returning only when both passes are done) is here too; what
it does and why: docs/generate.md, "Answer forcing".
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common.model_refs import resolve_model
from common.remote_code_compat import restore_moved_names
from common.vllm_cpu import set_cpu_env_defaults
from generation.config import VLMConfig, unpinned_remote_code
from generation.images import ImageRejected, normalize, read_file
from generation.reasoning import STYLES, parse_reasoning
from generation.records import GenerationRecord, Reject, sampling_json, utc_now
from generation.runs import ChunkResult, ImageTask

logger = logging.getLogger(__name__)


def model_revision(config: VLMConfig, model_path: str) -> str:
    """The revision a record names: the config's pin, else the local snapshot's commit, else ``local``."""
    if config.revision:
        return config.revision
    snapshot = Path(model_path)
    if snapshot.parent.name == "snapshots":
        return snapshot.name
    return "local" if snapshot.exists() else "unpinned"


@dataclass
class _Request:
    """One image's generation: its task, image and conversation, the first pass's output and, where
    the answer was forced, the second pass's completion (or why there was none)."""

    task: ImageTask
    image: Image.Image
    messages: list[dict]
    output: object = None  # vllm.RequestOutput of the first pass
    second: object = None  # vllm.CompletionOutput of the second pass
    second_finish: str = ""  # its finish reason, or context_full / engine_error


class Annotator:
    """A vLLM engine for one model config."""

    def __init__(self, config: VLMConfig):
        if warning := unpinned_remote_code(config):
            logger.warning(warning)
        import torch

        if not torch.cuda.is_available():
            set_cpu_env_defaults()
        from vllm import LLM, SamplingParams

        self.config = config
        self.model_path = resolve_model(config.model)
        self.revision = model_revision(config, self.model_path)
        self.question = config.question
        if config.trust_remote_code:  # Kimi-VL's tokenizer imports a name transformers 5 moved
            restore_moved_names()
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
        self.force_text = STYLES[config.parse_style].force if config.on_truncation == "force_answer" else None
        if self.force_text:
            # The same sampling for the continuation, with its own budget (a min_tokens is the first
            # generation's: the answer after the delimiter may be short).
            budget = {"max_tokens": config.force_answer_max_tokens, "min_tokens": 0}
            self.force_params = SamplingParams(**{**sampling, **budget})
            tokenizer = self.llm.get_tokenizer()
            self.force_ids = list(tokenizer.encode(self.force_text, add_special_tokens=False))
            self.max_model_len = self.llm.llm_engine.model_config.max_model_len

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
        """Records for the tasks that produced an output, rejects for the others (after the second
        pass, where answers are forced)."""
        result = ChunkResult(records=[], rejects=[])
        ready: list[_Request] = []
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
                    image = normalize(image)
                    ready.append(_Request(task, image, self._messages(image)))
            except Exception as error:  # any decoding failure of one image is that image's reject
                result.rejects.append(self._reject(task, "unreadable_image", error))
        generated: list[_Request] = []

        def first_pass(requests: list[_Request]) -> None:
            for request, output in zip(requests, self._chat([r.messages for r in requests]), strict=True):
                request.output = output
                generated.append(request)

        def first_failed(request: _Request, error: Exception) -> None:
            reason = "prompt_too_long" if _is_too_long(error) else "engine_error"
            result.rejects.append(self._reject(request.task, reason, error))

        _isolating_failures(ready, first_pass, first_failed)
        failed = [reject for reject in result.rejects if reject.reason == "engine_error"]
        if len(failed) > 1 and len(failed) == len(ready):
            raise RuntimeError(
                f"every request of the chunk failed in the engine, e.g. {failed[0].detail}; "
                "stopping (a resume redoes this chunk)"
            )
        if self.force_text:
            self._force_answers(generated)
        result.records.extend(self._record(request) for request in generated)
        return result

    def _force_answers(self, generated: list[_Request]) -> None:
        """The second pass: continue every generation that hit its token limit with the think open."""
        forced: list[tuple[_Request, list[int], object]] = []
        for request in generated:
            completion = request.output.outputs[0]
            if completion.finish_reason != "length":
                continue
            if parse_reasoning(completion.text, self.config.parse_style).closed:
                continue
            prompt = [*request.output.prompt_token_ids, *completion.token_ids, *self.force_ids]
            room = self.max_model_len - len(prompt)
            if room < 1:  # the first pass filled the context: nothing can follow
                request.second_finish = "context_full"
                continue
            params = self.force_params
            if room < params.max_tokens:
                params = params.clone()
                params.max_tokens = room
            forced.append((request, prompt, params))
        if not forced:
            return
        logger.info(
            "%s: %d of the chunk's %d generation(s) hit max_tokens with the think open: forcing their answers",
            self.config.annotator,
            len(forced),
            len(generated),
        )
        from vllm.inputs import TokensPrompt

        def second_pass(items: list[tuple[_Request, list[int], object]]) -> None:
            prompts = [
                TokensPrompt(prompt_token_ids=p, multi_modal_data={"image": r.image}) for r, p, _ in items
            ]
            outputs = self.llm.generate(prompts, [params for _, _, params in items], use_tqdm=False)
            for (request, _, _), output in zip(items, outputs, strict=True):
                request.second = output.outputs[0]
                request.second_finish = request.second.finish_reason or "abort"

        def second_failed(item: tuple[_Request, list[int], object], error: Exception) -> None:
            item[0].second_finish = "engine_error"  # the record stays as the first pass left it
            logger.warning(
                "%s: the second pass of %s failed: %s", self.config.annotator, item[0].task.image_id, error
            )

        _isolating_failures(forced, second_pass, second_failed)

    def _record(self, request: _Request) -> GenerationRecord:
        task, output, second = request.task, request.output, request.second
        completion = output.outputs[0]
        text = completion.text
        first_tokens, second_tokens = len(completion.token_ids), 0
        if second is not None:
            text = f"{text}{self.force_text}{second.text}"
            second_tokens = len(second.token_ids)
        parsed = parse_reasoning(text, self.config.parse_style)
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
            output=text,
            think=parsed.think,
            answer=parsed.answer,
            think_closed=parsed.closed,
            finish_reason=completion.finish_reason or "abort",
            num_prompt_tokens=len(output.prompt_token_ids or ()),
            num_output_tokens=first_tokens + second_tokens,
            sampling=self.sampling_record,
            created_at=utc_now(),
            forced_answer=second is not None,
            num_first_pass_tokens=first_tokens,
            num_second_pass_tokens=second_tokens,
            second_pass_finish_reason=request.second_finish,
        )

    def _reject(self, task: ImageTask, reason: str, error: Exception | str) -> Reject:
        detail = (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:2000]
        return Reject(task.image_id, task.image_path, "generate", self.config.annotator, reason, detail)


def _isolating_failures(
    items: list, run: Callable[[list], None], failed: Callable[[object, Exception], None]
) -> None:
    """``run(items)`` as one batch; when the engine refuses the batch (not fatally), the failing
    item(s) are isolated by halving, each reported to ``failed``, and the others go through."""
    if not items:
        return
    try:
        run(items)
    except _fatal_errors():
        raise
    except (ValueError, RuntimeError, _vllm_error()) as error:
        if len(items) == 1:
            failed(items[0], error)
            return
        middle = len(items) // 2
        _isolating_failures(items[:middle], run, failed)
        _isolating_failures(items[middle:], run, failed)


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
