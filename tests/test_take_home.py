"""The code is the course: every chapter writes the library calls it teaches in cells tagged `take-home`, which import
nothing from `helpers` and use no notebook-only syntax, so a learner can copy them into a script. Each chapter's own
test file runs its take-home cells on their own (tests/take_home.py); this file checks what every chapter shares."""
import re

import pytest

from helpers.runs import course_notebooks
from take_home import take_home_cells

# The calls each chapter teaches, as they must appear in its take-home cells (regular expressions).
TAUGHT = {
    "00_setup_and_data": [r'"prompt":', r'"completion":', r"\.apply_chat_template\("],
    "01_label_masking": [r"SFTConfig\(", r"completion_only_loss=", r"SFTTrainer\(", r"\.train_dataset\b",
                         r"-100"],
    "02_logged_training": [r"LoraConfig\(", r"SFTConfig\(", r"logging_steps=", r"SFTTrainer\(",
                           r"trainer\.train\(\)", r"trainer\.state\.log_history", r"\.merge_and_unload\(\)",
                           r"\.save_pretrained\(", r"softmax"],
    "03_gguf_quantization": [r"convert_hf_to_gguf\.py", r"llama_model_quantize\(", r"Llama\("],
    "04_few_shot_vs_finetuned": [r"llama_cpp\.server", r"AsyncOpenAI\(", r"base_url=", r"api_key=",
                                 r"chat\.completions\.create\(", r"asyncio\.gather\("],
    "05_practitioners_alternatives": [r"AutoModelForSequenceClassification", r"TrainingArguments\(",
                                      r"Trainer\(", r"SetFitModel", r"\.train\(\)"],
    "06_distillation": [r"def compute_loss\(", r"kl_div", r"Trainer\("],
}


def test_every_chapter_is_listed():
    assert sorted(nb.stem for nb in course_notebooks()) == sorted(TAUGHT)


@pytest.mark.parametrize("stem", sorted(TAUGHT))
def test_take_home_cells_carry_the_chapter_s_calls_and_nothing_of_the_course(stem):
    cells = take_home_cells(stem)
    assert cells, f"{stem}: tag the cells with the chapter's library calls 'take-home'"
    code = "\n".join(cells)
    missing = [call for call in TAUGHT[stem] if not re.search(call, code)]
    assert not missing, f"{stem}: the take-home cells lack {missing}"
    assert not re.search(r"^\s*(from|import)\s+helpers\b", code, re.M), f"{stem}: a take-home cell imports helpers"
    assert not re.search(r"^\s*[!%]", code, re.M), f"{stem}: a take-home cell uses IPython syntax (! or %)"
