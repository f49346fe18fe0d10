"""LitServe serving a causal LM with its dynamic batching: ``python litserve_server.py MODEL_DIR PORT``.

LitServe gathers up to ``max_batch_size`` (32) requests (waiting up to ``batch_timeout``, 10 ms) and hands them
to ``predict`` at once; here that is one batched ``generate`` to the longest ``max_new_tokens`` of the batch
(static batching: a batch ends when its longest row does). Each row is cut to its own ``max_new_tokens`` and
first EOS, and the answer is ``{"generated_tokens": n}``. torch and LitServe run at their defaults.
"""

import sys

import litserve as ls
from pydantic import BaseModel

MAX_BATCH_SIZE = 32
# LitServe's default batch_timeout (0) has its worker poll the queue without blocking, a core spinning between
# batches on a 2-core machine; 10 ms, the order of its documented examples, blocks instead.
BATCH_TIMEOUT_S = 0.01


class GenerateRequest(BaseModel):
    prompt: str
    max_new_tokens: int


class GenerateAPI(ls.LitAPI):  # type: ignore[misc]
    """``POST /predict`` with ``{"prompt": str, "max_new_tokens": int}``: greedy generation."""

    def __init__(self, model_dir: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        self.eos = self.model.generation_config.eos_token_id

    def decode_request(self, request: GenerateRequest) -> tuple[str, int]:
        return request.prompt, request.max_new_tokens

    def predict(self, batch: list[tuple[str, int]]) -> list[int]:
        enc = self.tokenizer([p for p, _ in batch], return_tensors="pt", padding=True)
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max(n for _, n in batch),
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        rows = out[:, enc["input_ids"].shape[1] :].tolist()
        return [self._length(row[:n]) for row, (_, n) in zip(rows, batch, strict=True)]

    def _length(self, row: list[int]) -> int:
        return next((i + 1 for i, t in enumerate(row) if t == self.eos), len(row))

    def unbatch(self, output: list[int]) -> list[int]:
        return output

    def encode_response(self, output: int) -> dict[str, int]:
        return {"generated_tokens": output}


def main() -> None:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    server = ls.LitServer(GenerateAPI(model_dir), accelerator="cpu")
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    main()
