"""Set-up steps that `make setup` runs once each: llama.cpp's converter, the base model folder, the tiny model."""
import argparse

from helpers.config import make_config
from helpers.gguf import prepare_converter
from helpers.model import prepare_embedded_model, prepare_tiny_model

STEPS = {"converter": prepare_converter, "base-model": prepare_embedded_model, "tiny-model": prepare_tiny_model}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=STEPS)
    step = parser.parse_args().step
    print(f"{step}: {STEPS[step](make_config())}")
