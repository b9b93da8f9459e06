"""One image + question through vLLM's real CPU engine, greedily: tests compare its tokens with transformers'."""

import gc


def vllm_greedy(model_path, image, question: str, max_tokens: int):
    """The RequestOutput of a greedy ``LLM.chat`` on one image; the engine is freed before returning."""
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_path),
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        max_num_seqs=2,
        limit_mm_per_prompt={"image": 1, "video": 0},
    )
    try:
        parts = [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": question}]
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        (output,) = llm.chat([{"role": "user", "content": parts}], params, use_tqdm=False)
    finally:
        del llm
        gc.collect()
    return output
