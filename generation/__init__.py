"""Sample images, run thinking VLMs over them with vLLM, parse think/answer and write resumable shards."""
